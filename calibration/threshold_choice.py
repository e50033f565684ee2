"""Choosing the deterministic mask threshold from a sweep (torch-free): the candidates, one
measured point, and the rule that picks among them (:mod:`calibration.threshold` measures)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: Default sweep: 0.30, 0.35, ..., 0.70.
DEFAULT_THRESHOLDS = tuple(round(0.30 + 0.05 * i, 2) for i in range(9))
#: The noiseless arg-max of Eq. 4: preferred among equally good thresholds.
NOISELESS_THRESHOLD = 0.5


@dataclass(frozen=True)
class SweepPoint:
    """Retrieval quality and mask density (fraction of ones, per block) at one setting."""

    threshold: float | None  # None: the stochastic reference
    mAP: float
    rank1: float
    density: dict[int, float]


def choose_threshold(reference: SweepPoint, points: Sequence[SweepPoint]) -> float:
    """The threshold whose mAP is closest to the reference's; among equals (to 1e-9), the
    one closest to 0.5, then the lower one."""
    def threshold(p: SweepPoint) -> float:
        if p.threshold is None:
            raise ValueError("the sampled reference is not a threshold to choose")
        return p.threshold

    def key(p: SweepPoint) -> tuple[float, float, float]:
        return round(abs(p.mAP - reference.mAP), 9), round(abs(threshold(p) - NOISELESS_THRESHOLD), 9), threshold(p)

    return threshold(min(points, key=key))
