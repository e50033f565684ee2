"""The one way the toolkit unpickles a ``.pt``/``.pth`` file: ``torch.load(weights_only=True)``."""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from san.contract.limits import LimitError, exceeds


def load_weights_only(path: str | Path) -> Any:
    """``path`` loaded onto the CPU by PyTorch's weights-only unpickler, which refuses code and
    every object that is not plain data or tensors. Its warning about a pickle protocol it was
    not written with is dropped: a file it cannot read raises, and that error is reported, in
    one line, by the caller. A zip archive (PyTorch's format) that declares more than
    :data:`san.contract.limits.MAX_CHECKPOINT_BYTES` unpacked is refused before anything is unpacked."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            declared = sum(entry.file_size for entry in archive.infolist())
        if over := exceeds(declared, "MAX_CHECKPOINT_BYTES"):
            raise LimitError(f"declares {declared} bytes unpacked, {over}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
        return torch.load(path, map_location="cpu", weights_only=True)
