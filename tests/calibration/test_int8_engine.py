"""A Q/DQ file built as a TensorRT INT8 engine (GPU machines)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_qdq_file_builds_as_an_int8_tensorrt_engine(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    from export.tensorrt_build import BatchProfile, build_engine
    from san.contract.tensorrt_target import TargetEnvironment, TensorRTUnavailable

    try:
        TargetEnvironment.detect()
    except TensorRTUnavailable as exc:
        pytest.skip(f"needs an NVIDIA GPU with TensorRT: {exc}")
    qdq = request.getfixturevalue("quantized_tensorrt").out
    sidecar = build_engine(qdq, tmp_path / "model.engine", profile=BatchProfile(1, 4, 8))
    assert sidecar.precision == "int8" and (tmp_path / "model.engine").stat().st_size > 0
