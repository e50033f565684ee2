"""The suite's one small model: a ResNet-18 SAN at 64x32 that looks trained, written as a
checkpoint and its ONNX export, plus a folder of images to run it on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from PIL import Image

N_IMAGES = 12
TINY_SPEC = {"height": 64, "width": 32}


def build_tiny(root: Path) -> Path:
    """``root`` with model.pt, model.onnx, nocontract.onnx (the same graph without its
    contract) and ``images/`` (:func:`make_images`)."""
    import torch

    from export.onnx_export import export_onnx
    from san import ModelConfig, build_model, save_checkpoint
    from support.looks_trained import looks_trained

    torch.manual_seed(0)
    model = looks_trained(build_model(ModelConfig(backbone="resnet18").with_spec(**TINY_SPEC)))
    root.mkdir(parents=True)
    save_checkpoint(root / "model.pt", model)
    export_onnx(model, root / "model.onnx")
    proto = onnx.load(root / "model.onnx")
    del proto.metadata_props[:]
    onnx.save(proto, root / "nocontract.onnx")
    make_images(root / "images", N_IMAGES)
    return root


def make_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` small random RGB images of varied sizes, as png and JPG, some in a subfolder."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / ("sub" if i % 3 == 0 else "") / f"im{i:04d}.{'png' if i % 2 else 'JPG'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (60 + i % 9, 30 + i % 5, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths
