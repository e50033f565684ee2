"""Calibration-set hygiene: a deterministic sample that shares no image with evaluation.

Calibrating on query or gallery images leaks the test set into the quantized model (its
ranges are fitted to exactly the images it is then scored on). :func:`select_calibration_set`
draws ``num`` images from the calibration folder with a seeded generator and refuses the
whole folder when any of its images is also an evaluation image — the same resolved path,
or the same bytes under another name (sha256 of the file; only files whose size matches an
evaluation file are hashed, so large evaluation sets cost little). A drawn file that
cannot be decoded is skipped with its reason and replaced by a further draw; unreadable
files (dangling or looping links, FIFOs, devices) never stop the overlap check.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from san.data.records import ReidDataset
from san.io.discovery import discover_images
from san.io.errors import ToolkitError
from san.io.hashing import file_sha256
from san.io.preprocess import ImageDecodeError, decode_image, printable_path

#: How many offending files an overlap error names.
SHOWN_OFFENDERS = 5


class CalibrationOverlapError(ToolkitError, ValueError):
    """Calibration images that are also evaluation images."""


@dataclass(frozen=True)
class CalibrationSet:
    """The sampled calibration images and how they were drawn."""

    images: tuple[Path, ...]
    pool: int  # images found in the calibration folder
    seed: int
    evaluation_images: int  # images the sample was checked against
    skipped: tuple[tuple[Path, str], ...] = ()  # drawn files that cannot be decoded, and why
    evaluation_source: str = ""  # where those came from, in words

    def sampling(self) -> dict[str, int]:
        """What goes into the output's metadata next to the method."""
        return {"seed": self.seed, "num_images": len(self.images), "pool_images": self.pool,
                "checked_against_evaluation_images": self.evaluation_images}

    def to_dict(self) -> dict[str, Any]:
        return {**self.sampling(), "images": [str(p) for p in self.images],
                "skipped": [{"path": str(p), "reason": r} for p, r in self.skipped]}

    def render(self) -> str:
        """One line for humans, then one per skipped file."""
        lines = [
            f"calibration sample: {len(self.images)} of {self.pool} images, seed {self.seed}; "
            f"no overlap with {self.evaluation_images} evaluation images"
            + (f" ({self.evaluation_source})" if self.evaluation_source else "")
            + (f"; {len(self.skipped)} unreadable files skipped:" if self.skipped else "")
        ]
        lines += [f"  {printable_path(path)}: {reason}" for path, reason in self.skipped]
        return "\n".join(lines)


def folder_images(directory: str | Path, argument: str) -> list[Path]:
    """Absolute paths of the images under ``directory`` (recursive, stable order)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{argument} {directory}: not a directory (expected a folder of images)")
    return [directory / rel for rel in discover_images(directory)]


def evaluation_images(exclude: Sequence[str | Path] = (), dataset: ReidDataset | None = None) -> list[Path]:
    """The evaluation split: images under every ``exclude`` folder plus the query and
    gallery of ``dataset`` (as its loader lists them), each file once."""
    found = [p for directory in exclude for p in folder_images(directory, "--exclude")]
    if dataset is not None:
        found += [Path(r.path) for r in (*dataset.query, *dataset.gallery)]
    unique: dict[str, Path] = {}
    for path in found:
        unique.setdefault(os.path.realpath(path), path)  # realpath: a link loop is no error
    return list(unique.values())


def evaluation_source(exclude: Sequence[str | Path] = (), dataset: ReidDataset | None = None) -> str:
    """Where :func:`evaluation_images` found them, in words: the counts of the two sources differ
    (a folder holds every image file; a loader leaves out what its protocol drops, such as
    Market-1501's junk images, person id -1)."""
    parts = ["every image file under --exclude"] if exclude else []
    if dataset is not None:
        parts.append(f"{dataset.name}'s query and gallery as its loader lists them, without the images it drops")
    return "; ".join(parts)


def sample_images(paths: Sequence[Path], num: int, seed: int) -> list[Path]:
    """``num`` of ``paths`` drawn without replacement by ``numpy.random.default_rng(seed)``,
    in their input order; all of them when ``num`` is at least their count."""
    if num < 1:
        raise ValueError(f"--num must be >= 1, got {num}")
    if num >= len(paths):
        return list(paths)
    chosen = np.random.default_rng(seed).choice(len(paths), size=num, replace=False)
    return [paths[i] for i in sorted(chosen)]


def sample_readable(paths: Sequence[Path], num: int, seed: int) -> tuple[list[Path], list[tuple[Path, str]]]:
    """:func:`sample_images`, with each drawn file that cannot be decoded replaced by a draw
    (same seed) from the files not drawn yet: (the sample in input order, (file, reason) skipped).
    The same as :func:`sample_images` when every file decodes."""
    chosen: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    rest = list(paths)
    while len(chosen) < num and rest:
        drawn = sample_images(rest, num - len(chosen), seed)
        taken = set(drawn)
        rest = [p for p in rest if p not in taken]
        for path in drawn:
            try:
                decode_image(path)
            except ImageDecodeError as exc:
                skipped.append((path, exc.reason))
            else:
                chosen.append(path)
    position = {p: i for i, p in enumerate(paths)}
    return sorted(chosen, key=position.__getitem__), skipped


def _regular_size(path: Path) -> int | None:
    """Size of the regular file behind ``path``; None when it is unreadable, not a regular file
    (hashing a FIFO or a device would block or never end) or empty (all empty files have the
    same bytes, and none is an image)."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) and info.st_size else None


def find_overlap(candidates: Iterable[Path], evaluation: Iterable[Path]) -> list[tuple[Path, Path, str]]:
    """(calibration image, evaluation image, "same path" | "same content") for every clash."""
    evaluation = list(evaluation)
    by_path = {Path(os.path.realpath(p)): p for p in evaluation}  # realpath: a link loop is no error
    by_size: dict[int, list[Path]] = {}
    for p in evaluation:
        size = _regular_size(p)
        if size is not None:
            by_size.setdefault(size, []).append(p)
    eval_hashes: dict[Path, str] = {}
    clashes = []
    for path in candidates:
        resolved = Path(os.path.realpath(path))
        if resolved in by_path:
            clashes.append((path, by_path[resolved], "same path"))
            continue
        size = _regular_size(path)
        same_size = by_size.get(size, []) if size is not None else []
        if not same_size:
            continue
        digest = file_sha256(path)
        for other in same_size:
            if eval_hashes.setdefault(other, file_sha256(other)) == digest:
                clashes.append((path, other, "same content"))
                break
    return clashes


def check_disjoint(candidates: Sequence[Path], evaluation: Sequence[Path]) -> None:
    """Raise :class:`CalibrationOverlapError` naming a few offenders and their count."""
    clashes = find_overlap(candidates, evaluation)
    if not clashes:
        return
    shown = "\n".join(f"  {c}  ==  {e}  ({why})" for c, e, why in clashes[:SHOWN_OFFENDERS])
    more = f"\n  ... and {len(clashes) - SHOWN_OFFENDERS} more" if len(clashes) > SHOWN_OFFENDERS else ""
    raise CalibrationOverlapError(
        f"refused: {len(clashes)} of {len(candidates)} calibration images are also evaluation "
        f"(query/gallery) images:\n{shown}{more}\n"
        "Calibrating on evaluation images fits the INT8 ranges to the test set. Point --images at "
        "training or other held-out images, or remove these files from it."
    )


def select_calibration_set(
    images_dir: str | Path,
    num: int,
    seed: int,
    exclude: Sequence[str | Path] = (),
    dataset: ReidDataset | None = None,
) -> CalibrationSet:
    """Check the whole calibration folder against the evaluation split, then sample it."""
    pool = folder_images(images_dir, "--images")
    if not pool:
        raise FileNotFoundError(f"--images {images_dir}: no images found (.jpg .jpeg .png .bmp .webp)")
    evaluation = evaluation_images(exclude, dataset)
    check_disjoint(pool, evaluation)
    images, skipped = sample_readable(pool, num, seed)
    if not images:
        raise FileNotFoundError(f"--images {images_dir}: none of the {len(pool)} files can be decoded")
    return CalibrationSet(tuple(images), len(pool), seed, len(evaluation), tuple(skipped),
                          evaluation_source(exclude, dataset))
