"""The one way reports are shown: ``render()`` for a terminal, ``to_dict()`` for JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from san.io.atomic import atomic_write_json


class Report(Protocol):
    """What every report of the toolkit (evaluation, export verification, parity, INT8,
    threshold sweep, calibration sample, quantization) offers its command line."""

    def render(self) -> str:
        """Lines for a terminal."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready content."""
        ...


def write_json(report: Report, path: str | Path) -> Path:
    """Write ``report.to_dict()`` as indented JSON, atomically; returns the path."""
    atomic_write_json(path, report.to_dict())
    return Path(path)
