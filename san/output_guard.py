"""Outputs never replace the files a command reads.

A path comparison that resolves symlinks and ``..`` decides: an output that is one of the
command's inputs, or a folder that holds one, is refused before any work starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


def refuse_overwriting_inputs(out: str | Path, inputs: Mapping[str, str | Path], option: str = "--out") -> None:
    """Raise ``ValueError`` naming both options when ``out`` is, or contains, one of ``inputs``
    (option name -> path)."""
    target = Path(out).expanduser().resolve()
    for name, path in inputs.items():
        source = Path(path).expanduser().resolve()
        if source == target or target in source.parents:
            what = "is" if source == target else "contains"
            raise ValueError(f"{option} {out} {what} the {name} input {path}; choose another output path")
