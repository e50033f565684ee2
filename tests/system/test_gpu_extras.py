"""The install extras resolve to the onnxruntime and TensorRT builds their CUDA needs.

pip resolves each extra against the package index (``pip install --dry-run --report``), as a
user's install would: the extra's own requirements without their dependencies (TensorRT's
PyPI packages are source stubs that fetch NVIDIA's wheels, which cannot be prepared on a
machine without a GPU), then the base dependencies with the extra's onnxruntime and all
their dependencies, to show that nothing brings the CPU onnxruntime back beside the GPU one.
Skipped when the index cannot be reached.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS = PROJECT["optional-dependencies"]

pytestmark = pytest.mark.slow


def _resolve(requirements: list[str], tmp: Path, name: str, *, deps: bool) -> dict[str, Version]:
    """Package name -> the version pip would install for ``requirements`` on this Python."""
    report = tmp / f"{name}.json"
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--no-build-isolation", "--report", str(report), *([] if deps else ["--no-deps"]), *requirements]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        if any(s in done.stderr for s in ("NewConnectionError", "Could not find a version", "Network is unreachable")):
            pytest.skip(f"the package index is not reachable: {done.stderr.strip().splitlines()[-1]}")
        raise AssertionError(f"pip could not resolve {requirements}:\n{done.stderr[-2000:]}")
    return {item["metadata"]["name"].lower().replace("_", "-"): Version(item["metadata"]["version"])
            for item in json.loads(report.read_text())["install"]}


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Version]]:
    """Each extra alone, and the base dependencies with each extra's onnxruntime (all in parallel)."""
    tmp = tmp_path_factory.mktemp("resolve")
    runtime = {extra: [r for r in EXTRAS[extra] if Requirement(r).name.startswith("onnxruntime")]
               for extra in ("cpu", "gpu-cu12", "gpu-cu13")}
    pycuda = sorted({r for extra in ("gpu-cu12", "gpu-cu13") for r in EXTRAS[extra] if Requirement(r).name == "pycuda"})
    jobs = {extra: ([r for r in EXTRAS[extra] if Requirement(r).name != "pycuda"], False) for extra in runtime}
    jobs["pycuda"] = (pycuda, False)  # the same floor in both GPU extras: its sdist's metadata is built once
    jobs |= {f"base+{extra}": ([*PROJECT["dependencies"], *reqs], True) for extra, reqs in runtime.items()}
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = {name: pool.submit(_resolve, reqs, tmp, name, deps=deps) for name, (reqs, deps) in jobs.items()}
        return {name: future.result() for name, future in futures.items()}


def test_the_base_install_names_no_onnxruntime() -> None:
    assert not [r for r in PROJECT["dependencies"] if Requirement(r).name.startswith("onnxruntime")]


def test_cpu_gets_the_cpu_onnxruntime(resolved) -> None:
    assert set(resolved["cpu"]) == {"onnxruntime"}
    assert "onnxruntime" in resolved["base+cpu"] and "onnxruntime-gpu" not in resolved["base+cpu"]


@pytest.mark.parametrize("extra, cuda_12", [("gpu-cu12", True), ("gpu-cu13", False)])
def test_gpu_extras_get_the_onnxruntime_gpu_and_tensorrt_of_their_cuda(resolved, extra: str, cuda_12: bool) -> None:
    picked = resolved[extra]
    assert "onnxruntime" not in picked and "onnxruntime" not in resolved[f"base+{extra}"]
    ort = picked["onnxruntime-gpu"]
    assert (ort < Version("1.27")) if cuda_12 else (ort >= Version("1.27")), ort  # 1.27: the CUDA 13 switch
    tensorrt = picked["tensorrt-cu12" if cuda_12 else "tensorrt-cu13"]
    assert Version("10") <= tensorrt < Version("12")
    floor = next(Requirement(r) for r in EXTRAS[extra] if Requirement(r).name == "pycuda")
    assert Version("2025.1.2") in floor.specifier and Version("2025.1.1") not in floor.specifier
    assert resolved["pycuda"]["pycuda"] >= Version("2025.1.2")  # the first that builds against CUDA 13
