"""Torch-free records shared by every data-set loader."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ImageRecord:
    """One image of a re-ID split: absolute path, person id and camera id."""

    path: str
    pid: int
    camid: int


@dataclass(frozen=True)
class ReidDataset:
    """Train/query/gallery splits of one data set.

    Training pids are relabelled to 0..N-1; query and gallery keep the original pids
    (distractors, pid 0 in Market-1501, stay in the gallery). ``single_shot`` is the scoring
    protocol the data set asks for, and every scorer follows it: CUHK03's classic protocol
    (one gallery image per id, from the other camera, 20 seeded draws; paper IV-A), else
    Market-1501's (every gallery image, same-camera matches of the query's id left out).
    """

    name: str
    train: tuple[ImageRecord, ...]
    query: tuple[ImageRecord, ...]
    gallery: tuple[ImageRecord, ...]
    extra: dict = field(default_factory=dict, compare=False)
    single_shot: bool = False

    @property
    def protocol(self) -> str:
        """The scoring protocol's name, for reports."""
        return "cuhk03 single-shot x20" if self.single_shot else "market1501"

    def summary(self) -> str:
        """A small table: ids, images and cameras per split."""
        lines = [f"{self.name}:", f"  {'split':<8}{'ids':>7}{'images':>9}{'cameras':>9}"]
        for split in ("train", "query", "gallery"):
            recs = getattr(self, split)
            ids = len({r.pid for r in recs})
            cams = len({r.camid for r in recs})
            lines.append(f"  {split:<8}{ids:>7}{len(recs):>9}{cams:>9}")
        return "\n".join(lines)
