"""PyTorch backend: a SAN checkpoint (``.pt``) in eval mode on the CPU or a CUDA device.

The only runtime module that imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from runtime.base import Backend, BackendError, physical_cores
from san.checkpoint import load_checkpoint
from san.spec import InputSpec


class TorchBackend(Backend):
    """Run a checkpoint written by ``san.save_checkpoint``.

    ``device``: ``"cpu"`` (default), ``"cuda"`` or ``"cuda:N"``. ``threads``: CPU
    intra-op threads (default: physical cores; sets torch's process-wide setting).
    """

    name = "torch"

    def __init__(self, artifact: str | Path, device: str = "cpu", threads: int | None = None) -> None:
        super().__init__(artifact)
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendError(f"device {device!r} requested but torch sees no CUDA GPU (torch {torch.__version__})")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.threads = threads or physical_cores()
        self._model: torch.nn.Module | None = None

    def _activate(self) -> InputSpec:
        if self.device.type == "cpu":
            torch.set_num_threads(self.threads)
        model, meta = load_checkpoint(self.artifact, map_location=self.device)
        self._model, self._sha256 = model, meta.sha256
        return meta.spec

    @torch.inference_mode()
    def _infer(self, batch: np.ndarray) -> np.ndarray:
        images = torch.from_numpy(batch).to(self.device, non_blocking=True)
        return self._model(images).float().cpu().numpy()

    def _deactivate(self) -> None:
        self._model = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "device": self.device.type}
