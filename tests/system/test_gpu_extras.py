"""The install extras resolve to the onnxruntime and TensorRT builds their CUDA needs.

pip picks each extra's packages against the package index (``pip install --dry-run --report
--no-deps``), as a user's install would, and reads their metadata through HTTP range requests
(``fast-deps``) instead of downloading the wheels, which are hundreds of MB each. Which CUDA a
pick needs is read from the pick's own metadata: onnxruntime-gpu's ``cuda`` extra names the
CUDA runtime it links against. That nothing brings the CPU onnxruntime back beside the GPU one
is read from the picks' requirements and from the installed base dependencies' metadata.
Skipped when the index cannot be reached.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

import pytest
import tomllib
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from support.module_folders import ModuleFolders

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS = PROJECT["optional-dependencies"]
UNREACHABLE = ("NewConnectionError", "Could not find a version", "Network is unreachable", "incomplete-download")

pytestmark = pytest.mark.slow


def _pick(requirements: list[str], tmp: Path, name: str) -> dict[str, tuple[Version, list[Requirement]]]:
    """Package name -> (the version pip would install for ``requirements``, its requirements)."""
    report = tmp / f"{name}.json"
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-deps", "--quiet",
               "--no-cache-dir", "--no-build-isolation", "--use-feature=fast-deps", "--report", str(report),
               *requirements]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        if any(s in done.stderr for s in UNREACHABLE):
            pytest.skip(f"the package index is not reachable: {done.stderr.strip().splitlines()[-1]}")
        raise AssertionError(f"pip could not resolve {requirements}:\n{done.stderr[-2000:]}")
    return {canonicalize_name(item["metadata"]["name"]): (Version(item["metadata"]["version"]),
                                                          [Requirement(r) for r in item["metadata"].get("requires_dist", [])])
            for item in json.loads(report.read_text())["install"]}


def _needed(requirement: Requirement, extra: str = "") -> bool:
    return requirement.marker is None or requirement.marker.evaluate({**default_environment(), "extra": extra})


@pytest.fixture(scope="module")
def picked(module_tmp: ModuleFolders) -> dict[str, dict[str, tuple[Version, list[Requirement]]]]:
    """Each extra's picks, pycuda's once (the same floor in both GPU extras), all in parallel."""
    tmp = module_tmp.mktemp("resolve")
    jobs = {extra: [r for r in EXTRAS[extra] if Requirement(r).name != "pycuda"] for extra in ("cpu", "gpu-cu12", "gpu-cu13")}
    jobs["pycuda"] = sorted({r for extra in ("gpu-cu12", "gpu-cu13") for r in EXTRAS[extra] if Requirement(r).name == "pycuda"})
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = {name: pool.submit(_pick, reqs, tmp, name) for name, reqs in jobs.items()}
        return {name: future.result() for name, future in futures.items()}


def _installed_closure(requirements: list[str]) -> set[str]:
    """Names of every installed distribution that ``requirements`` need, transitively (no extras)."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in seen or not _needed(requirement):
            continue
        seen.add(name)
        todo += [Requirement(r) for r in metadata.requires(name) or []]
    return seen


def test_no_base_dependency_brings_an_onnxruntime() -> None:
    closure = _installed_closure(PROJECT["dependencies"])
    assert {"onnx", "protobuf"} <= closure  # the walk went through the installed metadata (onnx needs protobuf)
    assert not {name for name in closure if name.startswith("onnxruntime")}


def test_cpu_gets_the_cpu_onnxruntime(picked) -> None:
    assert set(picked["cpu"]) == {"onnxruntime"}


def _cuda_major_of(requirements: list[Requirement]) -> int:
    """The CUDA major an onnxruntime-gpu build links against, from its ``cuda`` extra's runtime pin."""
    runtime = next(r for r in requirements if re.fullmatch(r"nvidia-cuda-runtime(-cu\d+)?", canonicalize_name(r.name))
                   and _needed(r, "cuda"))
    return int(max(Version(s.version) for s in runtime.specifier).major)


@pytest.mark.parametrize("extra, cuda", [("gpu-cu12", 12), ("gpu-cu13", 13)])
def test_gpu_extras_get_the_onnxruntime_gpu_and_tensorrt_of_their_cuda(picked, extra: str, cuda: int) -> None:
    picks = picked[extra]
    assert "onnxruntime" not in picks
    ort_version, ort_requires = picks["onnxruntime-gpu"]
    assert _cuda_major_of(ort_requires) == cuda, (ort_version, [str(r) for r in ort_requires])
    assert not [r for _, requires in picks.values() for r in requires
                if canonicalize_name(r.name) == "onnxruntime" and _needed(r)]
    tensorrt_version, tensorrt_requires = picks[f"tensorrt-cu{cuda}"]
    assert Version("10") <= tensorrt_version < Version("12")
    assert {canonicalize_name(r.name) for r in tensorrt_requires if _needed(r)} >= {f"tensorrt-cu{cuda}-libs"}


def test_pycuda_floor_is_the_first_release_that_builds_against_cuda_13(picked) -> None:
    for extra in ("gpu-cu12", "gpu-cu13"):
        floor = next(Requirement(r) for r in EXTRAS[extra] if Requirement(r).name == "pycuda")
        assert Version("2025.1.2") in floor.specifier and Version("2025.1.1") not in floor.specifier
    assert picked["pycuda"]["pycuda"][0] >= Version("2025.1.2")
