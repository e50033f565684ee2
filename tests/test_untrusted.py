"""Untrusted artifacts: pickled code, engines for other machines, ONNX files without or against
their contract, and non-finite outputs. Each is refused or reported, never used silently.

(The library-level checks live beside their modules: pickled code and mismatched keys in
tests/test_checkpoint.py, ONNX contract reading in tests/test_export.py. Here every command
that opens such a file is checked end to end.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from export.cli import main as san_export
from export.tensorrt_build import (
    SIDECAR_FORMAT,
    EngineCompatibilityError,
    TargetEnvironment,
    check_engine_compatible,
    read_sidecar,
    sidecar_path,
)

HERE = TargetEnvironment(tensorrt_version="10.13.0", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0")


class _Exploit:
    """Unpickling this creates ``marker``: proof that code inside the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


@pytest.fixture()
def evil_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    """A file that looks like a SAN checkpoint but runs code when unpickled; and its marker."""
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    torch.save({"format": "san-checkpoint", "version": 1, "state_dict": _Exploit(marker)}, path)
    torch.load(path, weights_only=False)  # the exploit is real: an unsafe load runs it
    assert marker.exists()
    marker.unlink()
    return path, marker


def test_san_export_refuses_pickled_code_without_running_it(evil_checkpoint, capsys) -> None:
    path, marker = evil_checkpoint
    assert san_export(["--ckpt", str(path), "--out", str(path.with_suffix(".onnx"))]) == 2
    assert "refused: the file contains pickled code" in capsys.readouterr().err
    assert not marker.exists() and not path.with_suffix(".onnx").exists()


def _sidecar(**changes: str) -> dict[str, str]:
    return {"format": SIDECAR_FORMAT, "tensorrt_version": HERE.tensorrt_version, "gpu_name": HERE.gpu_name,
            "compute_capability": HERE.compute_capability, **changes}


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"gpu_name": "NVIDIA A100-SXM4-80GB", "compute_capability": "8.0"}, "GPU: engine 'NVIDIA A100-SXM4-80GB'"),
        ({"tensorrt_version": "10.3.0"}, "TensorRT version: engine '10.3.0', this machine '10.13.0'"),
        ({"compute_capability": "9.0a"}, "compute capability"),
        ({"gpu_name": ""}, "GPU: engine ''"),
    ],
)
def test_engine_for_another_gpu_or_tensorrt_is_refused(changes: dict[str, str], named: str) -> None:
    with pytest.raises(EngineCompatibilityError, match="built for another machine") as info:
        check_engine_compatible(_sidecar(**changes), HERE)
    assert named in str(info.value) and "rebuild it on this machine" in str(info.value)


def test_engine_sidecar_that_omits_the_environment_is_refused() -> None:
    with pytest.raises(EngineCompatibilityError, match="TensorRT version: engine None"):
        check_engine_compatible({"format": SIDECAR_FORMAT}, HERE)
    check_engine_compatible(_sidecar(), HERE)  # the machine it was built on


def test_missing_or_forged_sidecar_is_refused(tmp_path: Path) -> None:
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\0" * 64)
    with pytest.raises(FileNotFoundError, match="sidecar not found"):
        read_sidecar(engine)
    sidecar_path(engine).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_sidecar(engine)
    sidecar_path(engine).write_text(json.dumps({"gpu_name": HERE.gpu_name}))
    with pytest.raises(ValueError, match="not a SAN engine sidecar"):
        read_sidecar(engine)
