"""Outputs never replace the files a command reads, nor an existing output unless asked.

A path comparison that resolves symlinks and ``..`` decides: an output that is one of the
command's inputs, or a folder that holds one, is refused before any work starts. An output
file that exists is replaced only with ``--overwrite`` (:func:`refuse_replacing`).
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


def refuse_replacing(path: Path, option: str, overwrite: bool) -> None:
    """Raise ``ValueError`` when the output ``path`` exists and ``overwrite`` is not given."""
    if path.exists() and not overwrite:
        raise ValueError(f"{option} {path}: exists; pass --overwrite to replace it, or give another {option}")
