"""Training losses: batch-hard triplet (Hermans et al.) + mu * sum_i TV(A_i) (paper Eq. 8)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from san.model.network import SANOutput

#: Floor under squared distances so sqrt has a finite gradient at 0.
_SQ_EPS = 1e-12


def pairwise_distances(x: Tensor) -> Tensor:
    """Euclidean distances between the rows of ``x`` (N x D -> N x N), in float32."""
    x = x.float()
    sq = x.pow(2).sum(1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    return d2.clamp_min(_SQ_EPS).sqrt()


class HardestPairs(NamedTuple):
    """Per anchor that has both: the distance to its farthest positive and nearest negative."""

    d_ap: Tensor
    d_an: Tensor


def batch_hard_pairs(embeddings: Tensor, pids: Tensor) -> HardestPairs:
    """Batch-hard mining (Hermans et al.): for each anchor with a positive (same pid, not
    itself) and a negative in the batch, the farthest positive and the nearest negative."""
    dist = pairwise_distances(embeddings)
    same = pids[:, None] == pids[None, :]
    eye = torch.eye(len(pids), dtype=torch.bool, device=pids.device)
    pos, neg = same & ~eye, ~same
    valid = pos.any(1) & neg.any(1)
    d_ap = dist.masked_fill(~pos, float("-inf")).amax(1)
    d_an = dist.masked_fill(~neg, float("inf")).amin(1)
    return HardestPairs(d_ap[valid], d_an[valid])


def triplet_terms(pairs: HardestPairs, margin: float = 0.5, soft: bool = False) -> Tensor:
    """Each anchor's loss: ``max(0, margin + d_ap - d_an)``, or ``softplus(d_ap - d_an)`` with ``soft``."""
    gap = pairs.d_ap - pairs.d_an
    return F.softplus(gap) if soft else (gap + margin).clamp_min(0.0)


def batch_hard_triplet(embeddings: Tensor, pids: Tensor, margin: float = 0.5, soft: bool = False) -> Tensor:
    """Batch-hard triplet loss, averaged over anchors (:func:`batch_hard_pairs`, :func:`triplet_terms`).

    Anchors without a positive or a negative in the batch are left out; a batch with none
    left gives 0 (still attached to the graph).
    """
    return _mean_or_zero(triplet_terms(batch_hard_pairs(embeddings, pids), margin, soft), embeddings)


def _mean_or_zero(per_anchor: Tensor, embeddings: Tensor) -> Tensor:
    """The mean over anchors; 0 attached to ``embeddings``' graph without anchors."""
    return per_anchor.mean() if per_anchor.numel() else embeddings.sum() * 0.0


@dataclass
class LossParts:
    """The total loss, its two terms (Eq. 8), and what they were computed from: the mined pairs,
    each anchor's triplet loss and each block's TV."""

    total: Tensor
    triplet: Tensor
    tv: Tensor
    pairs: HardestPairs
    per_anchor: Tensor
    tv_terms: list[Tensor]


def san_loss(output: SANOutput, pids: Tensor, margin: float = 0.5, soft: bool = False, mu: float = 0.1,
             gather: Callable[[Tensor], Tensor] | None = None) -> LossParts:
    """Eq. 8: batch-hard triplet + ``mu`` * sum_i TV(A_i).

    ``gather`` (across processes: :func:`san.training.distributed.gather_rows`) makes the triplet term
    mine the global batch of all ranks; TV stays this rank's mean, which DDP's gradient
    averaging turns into the global mean.

    TV is :meth:`SANOutput.tv_penalty` with its default per-element normalisation: Eq. 6
    sums over C x H x W, which at 256x128 is about a million times the triplet term, so
    with mu = 0.1 the raw sum would swamp it. Normalised, TV is a few units per element
    (about 5-6 on the synthetic set), so mu * TV sits beside a triplet term of 0.5-2.
    Call it outside autocast: it computes in float32.
    """
    if output.embeddings.dtype != torch.float32:  # mixed precision: score in float32
        output = replace(output, embeddings=output.embeddings.float(), attended=[a.float() for a in output.attended])
    embeddings = gather(output.embeddings) if gather else output.embeddings
    pairs = batch_hard_pairs(embeddings, gather(pids) if gather else pids)
    per_anchor = triplet_terms(pairs, margin, soft)
    triplet = _mean_or_zero(per_anchor, embeddings)
    tv_terms = output.tv_terms()
    tv = output.tv_penalty(tv_terms)
    return LossParts(triplet + mu * tv, triplet, tv, pairs, per_anchor, tv_terms)
