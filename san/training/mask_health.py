"""Mask health: what the attention blocks and the triplet miner do, from batches in flight.

Per block (keyed by stage): the mean mask M and mean pi, the shares of M below 0.1 and above
0.9, the share of pi above the deployed threshold, the mean |M - 1[pi > threshold]| (how far
the training-mode mask is from the one deployment will use) and the block's TV (Eq. 6, per
element, as in the loss). Per batch: the share of active triplets (loss > 0) and the mean
hardest d_ap and d_an. Everything is computed from tensors the training step already has,
without gradient; :class:`HealthTotals` sums it over an epoch's steps.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from torch import Tensor

from san.training.losses import HardestPairs

#: Mask values below LOW / above HIGH count as near 0 / near 1 (the reading of Fig. 2(b)).
LOW, HIGH = 0.1, 0.9


@torch.no_grad()
def block_health(m: Tensor, pi: Tensor, tv: Tensor, threshold: float | None) -> dict[str, float]:
    """One block's fields; ``threshold`` is the deployed mask's (None: the deployed mask is continuous,
    so ``pi_above`` and ``gap_to_deployed`` are left out)."""
    m, pi = m.detach().float(), pi.detach().float()
    fields = {
        "mean_m": m.mean(),
        "mean_pi": pi.mean(),
        "m_below_0.1": (m < LOW).float().mean(),
        "m_above_0.9": (m > HIGH).float().mean(),
    }
    if threshold is not None:
        deployed = (pi > threshold).float()
        fields["pi_above"] = deployed.mean()
        fields["gap_to_deployed"] = (m - deployed).abs().mean()
    fields["tv"] = tv.detach().float()
    return {name: float(value) for name, value in fields.items()}


@torch.no_grad()
def triplet_health(pairs: HardestPairs, per_anchor: Tensor) -> dict[str, float]:
    """Share of anchors whose loss is > 0, and the mean hardest d_ap and d_an (NaN without anchors)."""
    if per_anchor.numel() == 0:
        return {"active": float("nan"), "d_ap": float("nan"), "d_an": float("nan")}
    return {"active": float((per_anchor > 0).float().mean()), "d_ap": float(pairs.d_ap.mean()),
            "d_an": float(pairs.d_an.mean())}


class HealthTotals:
    """Sums and counts of each field over an epoch's steps, in step order (float64: deterministic).

    Every field seen gets an entry, so all ranks hold the same keys; a NaN (a batch without
    anchors) adds to neither its sum nor its count.
    """

    def __init__(self) -> None:
        self.sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def add(self, group: str, fields: dict[str, float]) -> None:
        for name, value in fields.items():
            present = value == value
            self.sums[group][name] += value if present else 0.0
            self.counts[group][name] += int(present)


def health_line(record: dict[str, Any]) -> str:
    """One short line of an epoch record's health: per block the mean M, the share near 0 or 1 and
    the gap to the deployed mask; then the active triplets and d_ap / d_an."""
    blocks = [f"b{stage} M {f['mean_m']:.2f} 0/1 {100 * (f['m_below_0.1'] + f['m_above_0.9']):.0f}%"
              + (f" gap {f['gap_to_deployed']:.2f}" if "gap_to_deployed" in f else "")
              for stage, f in record.get("masks", {}).items()]
    t = record["triplets"]
    triplets = f"active triplets {100 * t['active']:.0f}%, d_ap {t['d_ap']:.2f} d_an {t['d_an']:.2f}"
    return "  masks: " + " | ".join(blocks) + "; " + triplets if blocks else "  " + triplets
