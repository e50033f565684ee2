"""Where a model runs: one device type and the one reading of ``--device`` (torch-free).

``auto`` stays ``auto`` here: what it means depends on what runs the model (a CUDA GPU torch
can use, an onnxruntime with its CUDA provider), so each runner resolves it once, when it starts
(:func:`san.evaluation.evaluate.torch_device_name`, ``Backend.auto_device``).
"""

from __future__ import annotations

from dataclasses import dataclass

#: The one device vocabulary of every command (OpenVINO adds its own gpu[:N] and npu).
DEVICES = "cpu, cuda, cuda:N or auto (a CUDA GPU when there is one, else the CPU)"


@dataclass(frozen=True)
class Device:
    """``cpu``, CUDA device ``index`` (``cuda`` means ``cuda:0``), OpenVINO's ``gpu[:N]`` (an
    Intel GPU) and ``npu``, or ``auto``."""

    kind: str
    index: int = 0

    @classmethod
    def parse(cls, text: str) -> Device:
        """The device ``text`` names; ``ValueError`` saying what is expected otherwise."""
        kind, colon, index = text.strip().lower().partition(":")
        if kind in ("cpu", "auto", "npu") and not colon:
            return cls(kind)
        if kind in ("cuda", "gpu") and (not colon or index.isdigit()):
            return cls(kind, int(index or 0))
        raise ValueError(f"{text!r}: expected cpu, cuda or cuda:N, or auto (OpenVINO also: gpu, gpu:N, npu)")

    @property
    def is_auto(self) -> bool:
        """Whether the runner decides (see the module doc)."""
        return self.kind == "auto"

    def __str__(self) -> str:
        return self.kind if self.kind in ("cpu", "npu", "auto") else f"{self.kind}:{self.index}"
