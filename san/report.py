"""The one way reports are shown: ``render()`` for a terminal, ``to_dict()`` for JSON."""

from __future__ import annotations

from typing import Any, Protocol


class Report(Protocol):
    """What every report of the toolkit (evaluation, export verification, parity, INT8,
    threshold sweep, calibration sample, quantization) offers its command line."""

    def render(self) -> str:
        """Lines for a terminal."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready content."""
        ...
