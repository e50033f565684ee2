"""Where a model runs: one device type and the one reading of ``--device`` (torch-free).

``auto`` stays ``auto`` here: what it means depends on what runs the model (a CUDA GPU torch
can use, an onnxruntime with its CUDA provider), so each runner resolves it once, when it starts,
through :meth:`Device.resolved` with its own choice (:func:`san.evaluation.evaluate.torch_device_name`,
``Backend.auto_device``).
"""

from __future__ import annotations

from collections.abc import Callable
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

    def resolved(self, runners_choice: Callable[[], str]) -> Device:
        """The device a runner uses: ``auto`` becomes ``runners_choice()`` (asked only then), any
        other device stays. The one resolution of ``auto``, for every runner (torch and each
        backend)."""
        return Device.parse(runners_choice()) if self.is_auto else self

    def __str__(self) -> str:
        return self.kind if self.kind in ("cpu", "npu", "auto") else f"{self.kind}:{self.index}"
