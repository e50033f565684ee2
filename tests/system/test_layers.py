"""The packages' layers, read from the source: ``san`` <- ``export`` <- ``calibration``, and
``runtime`` -> ``san``'s torch-free modules only.

Module-level imports are what a module needs to load; imports inside a function are how a
backend reaches torch, TensorRT or OpenVINO only when it runs, and are allowed.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("san", "export", "calibration", "runtime")
#: What each package may import at module level, of the toolkit's own packages.
MAY_IMPORT = {"san": {"san"}, "export": {"san", "export"}, "calibration": {"san", "export", "calibration"},
              "runtime": {"san", "runtime"}}
#: Third-party modules that make a module a torch module.
TORCH = ("torch", "torchvision")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


@cache
def top_level_imports(module: str) -> tuple[str, ...]:
    """The modules ``module`` imports when it loads (not inside functions, not for type checking)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    found: list[str] = []

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                found.extend(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.append(node.module)
                found.extend(f"{node.module}.{alias.name}" for alias in node.names
                             if f"{node.module}.{alias.name}" in MODULES)
            elif isinstance(node, ast.If) and not _type_checking(node.test):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)

    visit(tree.body)
    return tuple(found)


def _type_checking(test: ast.expr) -> bool:
    return isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"


@cache
def needs_torch(module: str, seen: frozenset[str] = frozenset()) -> bool:
    """Whether loading ``module`` loads torch, through any chain of module-level imports."""
    for name in top_level_imports(module):
        if name.split(".")[0] in TORCH:
            return True
        own = _own(name)
        if own and own not in seen and own != module and needs_torch(own, seen | {module}):
            return True
    return False


def _own(name: str) -> str | None:
    """The toolkit module ``name`` loads (a package's ``__init__`` for ``san.x`` when ``x`` is a name in it)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_point_one_way(package: str) -> None:
    wrong = [f"{module} imports {name}" for module in MODULES if module.split(".")[0] == package
             for name in top_level_imports(module)
             if name.split(".")[0] in PACKAGES and name.split(".")[0] not in MAY_IMPORT[package]]
    assert wrong == []


def test_runtime_loads_torch_only_in_the_torch_backend() -> None:
    """Every runtime module but the backends (which the registry loads when asked for) loads
    without torch, so an edge install that never asks for the torch backend never needs it."""
    loading = [m for m in MODULES if m.split(".")[0] == "runtime" and not m.endswith("_backend") and needs_torch(m)]
    assert loading == []
    backends = [m for m in MODULES if m.startswith("runtime.") and m.endswith("_backend") and needs_torch(m)]
    assert backends == ["runtime.torch_backend"]


def test_the_check_sees_torch_where_it_is() -> None:
    """The reading itself, on modules whose status is known: the model loads torch, the
    contract and the artifact readers do not."""
    assert needs_torch("san.model.network") and needs_torch("san.training.checkpoint") and needs_torch("san.training.weights_file")
    assert not needs_torch("san.contract.spec") and not needs_torch("san.contract.artifact") and not needs_torch("san.io.output_lock")
    assert needs_torch("san.evaluation.evaluate") and "san.training.checkpoint" in top_level_imports("runtime.torch_backend")


BLOCKED = """
import importlib
import sys

sys.modules["torch"] = sys.modules["torchvision"] = None  # importing either now fails
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:  # a backend's own runtime (pycuda, tensorrt) not installed here
        if exc.name.split(".")[0] in ("torch", "torchvision") or not name.endswith("_backend"):
            raise
        print("absent", name, exc.name)
"""


def test_the_torch_free_modules_load_in_a_process_where_torch_cannot() -> None:
    """The reading above, checked by Python itself: every module it finds torch-free (the whole
    runtime but its torch backend among them) imports with torch blocked."""
    free = [m for m in MODULES if not needs_torch(m)]
    assert {m for m in MODULES if m.startswith("runtime.")} - set(free) == {"runtime.torch_backend"}
    done = subprocess.run([sys.executable, "-c", BLOCKED, *free], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    absent = [line.split()[1:] for line in done.stdout.splitlines()]
    assert all(module.endswith("_backend") and runtime in ("pycuda", "tensorrt") for module, runtime in absent), absent
