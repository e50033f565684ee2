"""Errors become exit statuses in one place (:func:`san.cli.command.command`): every error the
toolkit raises carries its status (:class:`san.io.errors.ToolkitError`), a library's refusal of an
input is a 2, and each is one line on stderr under the command's (and subcommand's) name."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from calibration.quantize import QuantizeError
from export.errors import ExportError, ExportInputError, TargetUnavailable
from runtime.base import BackendError
from san.cli.command import command, subcommand
from san.contract.spec import ContractError
from san.io.atomic import DestinationError
from san.io.errors import ToolkitError

ROOT = Path(__file__).resolve().parents[2]
#: The modules that hold a command's ``main``.
COMMAND_MODULES = sorted([*(ROOT / "san" / "cli").glob("*.py"), ROOT / "export" / "cli.py",
                          ROOT / "calibration" / "cli.py", *(ROOT / "runtime").glob("cli_*.py")])


@pytest.mark.parametrize(("error", "status"), [
    (ContractError("model.onnx: no contract"), 2), (BackendError("backend 'x': missing"), 2),
    (QuantizeError("cannot quantize"), 2), (ExportError("model.onnx failed its check"), 1),
    (ExportInputError("bad input"), 2), (TargetUnavailable("--trt: no GPU"), 3),
    (DestinationError(28, "no space left on device", "out.npy"), 2),
    (ValueError("a library refused it"), 2), (FileNotFoundError("x: not found"), 2),
])
def test_each_error_ends_the_command_with_its_status_in_one_line(error: Exception, status: int,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    @command("san-test")
    def main(argv: list[str] | None = None) -> int:
        subcommand("query")
        raise error

    assert main([]) == status
    assert capsys.readouterr().err == f"san-test query: error: {error}\n"


def test_every_error_the_toolkit_defines_carries_an_exit_status() -> None:
    defined = {}
    for path in sorted(p for package in ("san", "export", "calibration", "runtime") for p in (ROOT / package).rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef) and node.name.endswith(("Error", "Unavailable")):
                defined[f"{module}.{node.name}"] = getattr(importlib.import_module(module), node.name)
    assert len(defined) >= 15
    assert [name for name, cls in defined.items() if not issubclass(cls, ToolkitError)] == []


def test_an_unexpected_error_is_not_swallowed() -> None:
    @command("san-test")
    def main(argv: list[str] | None = None) -> int:
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        main([])


@pytest.mark.parametrize("module", COMMAND_MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_command_maps_errors_to_statuses_itself(module: Path) -> None:
    """A command's module catches no error to print it: the decorator does, for all of them."""
    tree = ast.parse(module.read_text(encoding="utf-8"))
    printing_handlers = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.ExceptHandler)
                         and any(isinstance(call, ast.Call) and getattr(call.func, "id", None) == "print"
                                 for call in ast.walk(node))]
    assert printing_handlers == []
