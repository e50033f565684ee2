"""Generic image-folder data set.

Layout: ``<root>/{train,query,gallery}/<pid>/<camera>_<anything>.<ext>``. Pid folder
names and camera prefixes may be any strings; each is mapped to an int by its sorted
position over all three splits, so query and gallery agree. ``train/`` is optional (a
folder used only for evaluation); train pids are then relabelled 0..N-1 as everywhere.
Hidden files and folders (name starting with ".") are skipped, as in image discovery.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from san.data.layout import relabel, report, require_dirs
from san.data.records import ImageRecord, ReidDataset
from san.io.discovery import IMAGE_SUFFIXES

FOLDER_EXAMPLE = "<pid>/<camera>_<anything>.jpg"


def _scan(split_dir: Path) -> tuple[list[tuple[Path, str, str]], int]:
    """(path, pid name, camera name) for every image, and the count of files that don't fit."""
    found, skipped = [], 0
    for path in sorted(p for p in split_dir.rglob("*") if not p.is_dir()):  # broken links too: the decoder reports them
        camera, sep, _ = path.stem.partition("_")
        in_pid_dir = path.parent.parent == split_dir
        hidden = any(part.startswith(".") for part in path.relative_to(split_dir).parts)
        if in_pid_dir and sep and camera and not hidden and path.suffix.lower() in IMAGE_SUFFIXES:
            found.append((path, path.parent.name, camera))
        else:
            skipped += 1
    return found, skipped


def _index(names: Iterable[str]) -> dict[str, int]:
    """Each distinct name -> its position in sorted order."""
    return {name: i for i, name in enumerate(sorted(set(names)))}


def folder(root: str | Path, verbose: bool = True) -> ReidDataset:
    """Load ``<root>/{train,query,gallery}/<pid>/<camera>_<anything>.<ext>``."""
    root = Path(root).expanduser().resolve()
    require_dirs(root, ("query", "gallery"), FOLDER_EXAMPLE)
    splits = ("train", "query", "gallery") if (root / "train").is_dir() else ("query", "gallery")
    scans = {split: _scan(root / split) for split in splits}
    pid_of = _index(pid for found, _ in scans.values() for _, pid, _ in found)
    cam_of = _index(cam for found, _ in scans.values() for _, _, cam in found)
    records = {
        split: tuple(ImageRecord(str(path), pid_of[pid], cam_of[cam]) for path, pid, cam in found)
        for split, (found, _) in scans.items()
    }
    for split in ("query", "gallery"):
        if not records[split]:
            raise ValueError(f"no images in {root / split}: expected files like {FOLDER_EXAMPLE}")
    dataset = ReidDataset(
        "folder", relabel(records.get("train", ())), records["query"], records["gallery"]
    )
    return report(dataset, verbose, sum(skipped for _, skipped in scans.values()))
