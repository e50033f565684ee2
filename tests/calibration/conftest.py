"""Fixtures of the calibration tests: a small synthetic set, the session's looks-trained model
and its ONNX export, a calibration sample and the INT8 files made from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from calibration.hygiene import folder_images, sample_images
from calibration.quantize import QuantizeOptions, QuantizeResult, quantize_onnx
from san.data.synth import ensure_synthetic
from san.model.network import SAN
from san.training.checkpoint import load_checkpoint
from support.calibration_helpers import OPTIONS, SYNTH
from support.module_folders import ModuleFolders


@pytest.fixture(scope="module")
def synth(module_tmp: ModuleFolders) -> Path:
    root = module_tmp.mktemp("data") / "synth"
    ensure_synthetic(root, **SYNTH)
    return root


@pytest.fixture(scope="module")
def fp32_model(tiny: Path) -> SAN:
    return load_checkpoint(tiny / "model.pt")[0]


@pytest.fixture(scope="module")
def fp32_onnx(tiny: Path) -> Path:
    return tiny / "model.onnx"


@pytest.fixture(scope="module")
def calibration_images(synth: Path) -> list[Path]:
    return sample_images(folder_images(synth / "bounding_box_train", "--images"), 8, seed=0)


@pytest.fixture(scope="module")
def quantized(fp32_onnx: Path, calibration_images: list[Path], module_tmp: ModuleFolders
              ) -> QuantizeResult:
    """The default file (onnxruntime CPU): uint8 activations, stem and stage 1 in fp32."""
    out = module_tmp.mktemp("int8") / "model.int8.onnx"
    return quantize_onnx(fp32_onnx, calibration_images, out, options=OPTIONS, sampling={"seed": 0})


@pytest.fixture(scope="module")
def quantized_tensorrt(quantized: QuantizeResult, fp32_onnx: Path, calibration_images: list[Path]) -> QuantizeResult:
    """The TensorRT flavour: symmetric int8 activations, everything quantized (ranges from the cache)."""
    options = QuantizeOptions(target="tensorrt", float_blocks=0, batch_size=4, progress=False)
    out = quantized.out.with_name("model.trt-int8.onnx")
    return quantize_onnx(fp32_onnx, calibration_images, out, options=options, cache_dir=quantized.cache.parent)
