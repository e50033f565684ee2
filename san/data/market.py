"""Market-1501 and DukeMTMC-reID: ``bounding_box_train/``, ``bounding_box_test/``, ``query/``.

Both share one parser, parameterised by the file-name pattern. pid -1 (junk) is dropped
everywhere; pid 0 (Market distractors) stays in the gallery and is dropped from training;
train pids are relabelled 0..N-1; cameras become 0-based. Files whose names don't match
the pattern are skipped and counted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from san.data.layout import locate, relabel, report, require_dirs
from san.data.records import ImageRecord, ReidDataset

JUNK_PID = -1
DISTRACTOR_PID = 0
SPLIT_DIRS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}


@dataclass(frozen=True)
class _Layout:
    """What differs between the two data sets: name, release folder, file names."""

    name: str
    subfolder: str
    pattern: re.Pattern[str]  # groups: pid, 1-based camera
    example: str


MARKET1501 = _Layout(
    "market1501",
    "Market-1501-v15.09.15",
    re.compile(r"(-1|\d+)_c(\d+)s\d+_\d+_\d+\.jpg"),
    "0002_c1s1_000451_03.jpg",
)
DUKEMTMCREID = _Layout(
    "dukemtmcreid", "DukeMTMC-reID", re.compile(r"(\d+)_c(\d+)_f\d+\.jpg"), "0001_c2_f0046182.jpg"
)


def _parse_dir(directory: Path, layout: _Layout) -> tuple[list[ImageRecord], int]:
    """Records (junk dropped, original pids) and the number of files that don't match."""
    records, skipped = [], 0
    for path in sorted(p for p in directory.iterdir() if not p.is_dir()):  # broken links too: the decoder reports them
        match = layout.pattern.fullmatch(path.name)
        if match is None:
            skipped += 1
        elif int(match[1]) != JUNK_PID:
            records.append(ImageRecord(str(path), int(match[1]), int(match[2]) - 1))
    if not records:
        raise ValueError(
            f"expected files like {layout.example} in {directory}/, "
            f"found none ({skipped} files did not match)"
        )
    return records, skipped


def _load(root: str | Path, layout: _Layout, verbose: bool) -> ReidDataset:
    base = locate(root, layout.subfolder, SPLIT_DIRS["train"])
    if base is None:
        root = Path(root).expanduser().resolve()
        raise FileNotFoundError(
            f"expected {root}/{SPLIT_DIRS['train']}/ (or {root}/{layout.subfolder}/"
            f"{SPLIT_DIRS['train']}/) with files like {layout.example}"
        )
    require_dirs(base, SPLIT_DIRS.values(), layout.example)
    parsed = {split: _parse_dir(base / name, layout) for split, name in SPLIT_DIRS.items()}
    train = relabel(r for r in parsed["train"][0] if r.pid != DISTRACTOR_PID)
    dataset = ReidDataset(layout.name, train, tuple(parsed["query"][0]), tuple(parsed["gallery"][0]))
    return report(dataset, verbose, sum(skipped for _, skipped in parsed.values()))


def market1501(root: str | Path, verbose: bool = True) -> ReidDataset:
    """Market-1501 from ``root`` or ``root/Market-1501-v15.09.15``."""
    return _load(root, MARKET1501, verbose)


def dukemtmcreid(root: str | Path, verbose: bool = True) -> ReidDataset:
    """DukeMTMC-reID from ``root`` or ``root/DukeMTMC-reID``."""
    return _load(root, DUKEMTMCREID, verbose)
