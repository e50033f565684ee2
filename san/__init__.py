"""SAN: Sharp Attention Network for person re-identification.

Public API (kept small)::

    from san import ModelConfig, InputSpec, build_model, save_checkpoint, load_checkpoint

Importing ``san`` does not import torch: the contract (:mod:`san.spec`), preprocessing
(:mod:`san.preprocess`) and metrics (:mod:`san.metrics`) stay usable on torch-free edge
boxes; the torch-backed names below load on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from san.spec import InputSpec

_LAZY = {
    "ModelConfig": "san.config",
    "build_model": "san.model.network",
    "SAN": "san.model.network",
    "save_checkpoint": "san.checkpoint",
    "load_checkpoint": "san.checkpoint",
    "CheckpointError": "san.checkpoint",
}

__all__ = ["InputSpec", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'san' has no attribute {name!r}")
