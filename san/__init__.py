"""SAN: Sharp Attention Network for person re-identification.

Public API (kept small)::

    from san import ModelConfig, InputSpec, build_model, save_checkpoint, load_checkpoint

Importing ``san`` does not import torch: the contract (:mod:`san.contract.spec`), preprocessing
(:mod:`san.io.preprocess`) and metrics (:mod:`san.evaluation.metrics`) stay usable on torch-free edge
boxes; the torch-backed names below load on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from san.contract.spec import InputSpec
from san.moved import install

install()  # former module names (san.spec, san.train, ...) still import, for one release

_LAZY = {
    "ModelConfig": "san.model.config",
    "build_model": "san.model.network",
    "SAN": "san.model.network",
    "save_checkpoint": "san.training.checkpoint",
    "load_checkpoint": "san.training.checkpoint",
    "CheckpointError": "san.training.checkpoint",
}

__all__ = ["InputSpec", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'san' has no attribute {name!r}")
