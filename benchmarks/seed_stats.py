"""Statistics of runs paired by seed: Student-t intervals, the paired difference over seeds and
the smallest effect a paired design detects. Numpy only, with the t quantiles tabulated."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Two-sided 95 % Student t quantiles by degrees of freedom (df > 30: the normal's 1.96).
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}
#: One-sided 80 % Student t quantiles by degrees of freedom (df > 30: the normal's 0.842), the
#: power term of the smallest detectable effect.
T80 = {1: 1.376, 2: 1.061, 3: 0.978, 4: 0.941, 5: 0.920, 6: 0.906, 7: 0.896, 8: 0.889, 9: 0.883, 10: 0.879,
       12: 0.873, 15: 0.866, 20: 0.860, 30: 0.854}


def _quantile(table: dict[int, float], df: float, beyond: float) -> float:
    """``table`` at ``df`` rounded down to a listed df (the conservative side); ``beyond`` above 30."""
    return table[max(k for k in table if k <= max(1, int(df)))] if df <= 30 else beyond


def t975(df: float) -> float:
    """The 95 % two-sided Student t quantile for ``df`` degrees of freedom."""
    return _quantile(T975, df, 1.96)


def t_interval(values: list[float]) -> tuple[float, float]:
    """Mean and 95 % half-width of ``values`` (Student t; NaN for a single value)."""
    n, mean = len(values), float(np.mean(values))
    if n < 2:
        return mean, float("nan")
    return mean, t975(n - 1) * float(np.std(values, ddof=1)) / math.sqrt(n)


@dataclass(frozen=True)
class SeedPaired:
    """``b - a`` over seeds run in pairs (the same seed: data order, augmentation, initialisation):
    the mean difference, its 95 % t-interval, the SD of the differences, and the smallest true
    difference a two-sided 5 % paired t-test of this many pairs detects with 80 % power."""

    delta: float
    low: float
    high: float
    sd: float
    pairs: int
    detectable: float

    def verdict(self, claimed: float) -> str:
        """``supported`` (lower bound > 0), ``contradicted at +claimed`` (upper bound below it) or
        ``unresolved``."""
        if self.low > 0:
            return "supported"
        if self.high < claimed:
            return f"contradicted at {claimed:+.1f}"
        return "unresolved"


def paired_over_seeds(a: list[float], b: list[float]) -> SeedPaired:
    """:class:`SeedPaired` of ``b[i] - a[i]`` (one pair per seed; at least two pairs)."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"a paired interval over seeds needs two or more pairs, got {len(a)} and {len(b)} runs")
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    n, sd = len(d), float(np.std(d, ddof=1))
    mean, scale = float(d.mean()), sd / math.sqrt(len(d))
    half = t975(n - 1) * scale
    return SeedPaired(mean, mean - half, mean + half, sd, n, (t975(n - 1) + _quantile(T80, n - 1, 0.842)) * scale)
