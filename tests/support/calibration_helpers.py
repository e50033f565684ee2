"""Constants and helpers of the calibration tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import calibration.quantize
from calibration.quantize import QuantizeOptions, float_prefix
from san.contract.artifact import INPUT_NAME, OUTPUT_NAME
from san.contract.spec import InputSpec
from san.io.preprocess import load_image
from san.model.config import ModelConfig
from support.tiny import TINY_SPEC

#: The config of the session's tiny model (:mod:`support.tiny`).
CFG = ModelConfig(backbone="resnet18", spec=InputSpec(**TINY_SPEC))
SYNTH = {"ids": 16, "cameras": 2, "seed": 0, **TINY_SPEC}
OPTIONS = QuantizeOptions(batch_size=4, progress=False)


def float_prefix_of(onnx_path: Path, blocks: int) -> list[str]:
    model = onnx.load(onnx_path)
    return float_prefix(model, blocks)


def embed_onnx(path: Path, batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]


def counting_load_image(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make the calibration reader record every image it decodes."""
    calls: list[str] = []

    def counted(path: Path, spec: InputSpec) -> np.ndarray:
        calls.append(str(path))
        return load_image(path, spec)

    monkeypatch.setattr(calibration.quantize, "load_image", counted)
    return calls
