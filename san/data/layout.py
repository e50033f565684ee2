"""Small helpers every on-disk data-set loader shares: finding the root, checking the
expected folders, relabelling training ids and logging what was found."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from san.data.records import ImageRecord, ReidDataset

log = logging.getLogger(__name__)


def relabel(records: Iterable[ImageRecord]) -> tuple[ImageRecord, ...]:
    """Map pids to 0..N-1 in sorted order of the original pids."""
    records = tuple(records)
    label = {pid: i for i, pid in enumerate(sorted({r.pid for r in records}))}
    return tuple(replace(r, pid=label[r.pid]) for r in records)


def locate(root: str | Path, subfolder: str, marker: str) -> Path | None:
    """``root`` or ``root/subfolder``, whichever holds ``marker``; None if neither does."""
    root = Path(root).expanduser().resolve()
    return next((d for d in (root, root / subfolder) if (d / marker).exists()), None)


def require_dirs(root: Path, names: Iterable[str], example: str) -> None:
    """Raise FileNotFoundError naming the first missing ``root/name/`` and what belongs in it."""
    for name in names:
        if not (root / name).is_dir():
            raise FileNotFoundError(f"expected {root / name}/ with files like {example}")


def report(dataset: ReidDataset, verbose: bool, skipped: int = 0) -> ReidDataset:
    """Log the summary (and how many files were skipped) when ``verbose``; return ``dataset``."""
    if verbose:
        log.info(dataset.summary())
        if skipped:
            log.info(f"  skipped {skipped} files whose names do not follow the data set's pattern")
    return dataset
