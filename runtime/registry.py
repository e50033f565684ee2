"""Backend names -> classes, and choosing one for an artifact.

Classes are named by import path and imported on first use, so asking for the
onnxruntime backend never imports torch or tensorrt.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any

from runtime.base import Backend, BackendError
from san.contract.artifact import MODEL_KINDS, kind_for, sniff_model_kind
from san.io.extras import missing_extra


@dataclass(frozen=True)
class BackendEntry:
    """Where a backend class lives, and the model kinds (:data:`san.contract.artifact.ARTIFACT_KINDS`) it
    runs; each kind names the backend its files get by default."""

    module: str
    cls: str
    kinds: tuple[str, ...]

    def load(self) -> type[Backend]:
        """Import the backend's module and return its class."""
        return getattr(import_module(self.module), self.cls)


BACKENDS: dict[str, BackendEntry] = {
    "torch": BackendEntry("runtime.torch_backend", "TorchBackend", ("checkpoint",)),
    "onnxruntime": BackendEntry("runtime.onnxruntime_backend", "OnnxRuntimeBackend", ("onnx",)),
    "tensorrt": BackendEntry("runtime.tensorrt_backend", "TensorRTBackend", ("engine",)),
    "openvino": BackendEntry("runtime.openvino_backend", "OpenVINOBackend", ("openvino", "onnx")),
}


def backend_for(artifact: Path) -> str:
    """The default backend of an artifact's kind (:func:`san.contract.artifact.kind_for`)."""
    try:
        return kind_for(artifact).backend
    except ValueError as exc:
        raise ValueError(f"{exc}, or an explicit backend ({sorted(BACKENDS)})") from None


def open_backend(artifact: str | Path, backend: str | None = None, **options: Any) -> Backend:
    """Create the backend for ``artifact`` (by suffix, or by name ``backend``); not yet active.

    ``options`` go to the backend's constructor (e.g. ``threads=``, ``device=``,
    ``providers=``). Use it as a context manager: ``with open_backend(p) as b: b.infer(x)``.
    """
    artifact = Path(artifact)
    name = backend or backend_for(artifact)
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose from {sorted(BACKENDS)}")
    kind = sniff_model_kind(artifact) if artifact.is_file() else None
    if kind in MODEL_KINDS and kind not in BACKENDS[name].kinds:
        runs = " or ".join(MODEL_KINDS[k] for k in BACKENDS[name].kinds)
        raise ValueError(f"{artifact} is {MODEL_KINDS[kind]}; the {name} backend runs {runs}")
    try:
        cls = BACKENDS[name].load()
    except ImportError as exc:
        message = missing_extra(exc)
        if message is None:
            raise
        raise BackendError(f"backend {name!r}: {message}") from exc
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "artifact")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        flags = ", ".join(f"--{option.replace('_', '-')}" for option in unknown)
        raise ValueError(f"the {name} backend does not take option(s) {flags}; it takes "
                         f"{', '.join(f'--{a}' for a in accepted)}")
    return cls(artifact, **options)
