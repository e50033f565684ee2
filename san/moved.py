"""The modules' former names, before ``san`` was split into sub-packages: importing one gives the
module at its new home and a ``DeprecationWarning`` naming it. Kept for one release."""

from __future__ import annotations

import sys
import warnings
from importlib import import_module
from importlib.abc import Loader, MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

#: Former module name -> its home.
MOVED = {
    "san.arguments": "san.cli.arguments",
    "san.artifact": "san.contract.artifact",
    "san.atomic": "san.io.atomic",
    "san.checkpoint": "san.training.checkpoint",
    "san.command": "san.cli.command",
    "san.config": "san.model.config",
    "san.confinement": "san.contract.confinement",
    "san.device": "san.contract.device",
    "san.discovery": "san.io.discovery",
    "san.distributed": "san.training.distributed",
    "san.embedding": "san.evaluation.embedding",
    "san.engine_sidecar": "san.contract.engine_sidecar",
    "san.error_reason": "san.io.error_reason",
    "san.errors": "san.io.errors",
    "san.evaluate": "san.evaluation.evaluate",
    "san.extras": "san.io.extras",
    "san.failpoints": "san.io.failpoints",
    "san.hashing": "san.io.hashing",
    "san.input_convention": "san.contract.input_convention",
    "san.limits": "san.contract.limits",
    "san.losses": "san.training.losses",
    "san.mask_health": "san.training.mask_health",
    "san.metrics": "san.evaluation.metrics",
    "san.model_arguments": "san.cli.model_arguments",
    "san.onnx_graph": "san.contract.onnx_graph",
    "san.output_guard": "san.io.output_guard",
    "san.output_lock": "san.io.output_lock",
    "san.preprocess": "san.io.preprocess",
    "san.presets": "san.training.presets",
    "san.progress": "san.io.progress",
    "san.report": "san.evaluation.report",
    "san.rerank": "san.evaluation.rerank",
    "san.retrieval": "san.evaluation.retrieval",
    "san.rules": "san.contract.rules",
    "san.spec": "san.contract.spec",
    "san.summary": "san.evaluation.summary",
    "san.tensorrt_target": "san.contract.tensorrt_target",
    "san.train": "san.training.train",
    "san.train_config": "san.training.train_config",
    "san.weights_file": "san.training.weights_file",
}


class _MovedModules(MetaPathFinder, Loader):
    """Finds a former module name and loads it as the module at its new home."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        return ModuleSpec(fullname, self) if fullname in MOVED else None

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        warnings.warn(f"{spec.name} is now {MOVED[spec.name]}; the former name goes in the next release",
                      DeprecationWarning, stacklevel=2)
        return import_module(MOVED[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        """The module ran when it was imported at its new home."""


def install() -> None:
    """Let the former names import (once per process)."""
    if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModules())
