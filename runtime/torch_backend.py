"""PyTorch backend: a SAN checkpoint (``.pt``) in eval mode on the CPU or a CUDA device.

The only runtime module that imports torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from runtime.base import Backend, BackendError
from san.contract.spec import InputSpec
from san.evaluation.evaluate import ModelEmbedder, torch_device_name
from san.training.checkpoint import load_checkpoint


class TorchBackend(Backend):
    """Run a checkpoint written by ``san.save_checkpoint`` on the CPU or ``cuda:N``;
    ``threads`` sets torch's process-wide intra-op threads for the CPU; ``deployed_mask`` deploys
    its sampled masks otherwise than the checkpoint says (:data:`san.contract.spec.DEPLOYED_MASKS`)."""

    name = "torch"

    def __init__(self, artifact: str | Path, device: str | None = None, threads: int | None = None,
                 providers: Sequence[str] | None = None, deployed_mask: str | None = None) -> None:
        super().__init__(artifact, device, threads)
        self.deployed_mask = deployed_mask
        if providers:
            self._note_ignored("--providers", ",".join(providers), "execution providers are onnxruntime's")
        self.torch_device = torch.device(str(self.device))
        if self.device.kind == "cuda" and not torch.cuda.is_available():
            raise BackendError(f"--device {self.device}: torch sees no CUDA GPU (torch {torch.__version__})")
        self._model: ModelEmbedder | None = None  # the evaluation's embedder: one way to run a torch SAN

    def auto_device(self) -> str:
        return torch_device_name("auto")

    def _activate(self) -> InputSpec:
        if self.device.kind == "cpu":
            torch.set_num_threads(self.threads)
        model, meta = load_checkpoint(self.artifact, map_location=self.torch_device)
        if self.deployed_mask is not None and self.deployed_mask != model.spec.deployed_mask:
            model.set_deployed_mask(self.deployed_mask)
        self._model, self._sha256 = ModelEmbedder(model), meta.sha256
        return model.spec

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return self.loaded(self._model).infer(batch)

    def _deactivate(self) -> None:
        self._model = None
        if self.device.kind == "cuda":
            torch.cuda.empty_cache()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "device": self.device.kind,
                **({"deployed_mask": self.deployed_mask} if self.deployed_mask else {})}
