"""Training losses: batch-hard triplet (Hermans et al.) + mu * sum_i TV(A_i) (paper Eq. 8)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

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


def batch_hard_triplet(embeddings: Tensor, pids: Tensor, margin: float = 0.5, soft: bool = False) -> Tensor:
    """Batch-hard triplet loss, averaged over anchors.

    For each anchor: the farthest sample with its pid (other than itself) and the nearest
    with another pid; loss ``max(0, margin + d_ap - d_an)``, or ``softplus(d_ap - d_an)``
    with ``soft`` (soft margin). Anchors without a positive or a negative in the batch are
    left out; a batch with none left gives 0 (still attached to the graph).
    """
    dist = pairwise_distances(embeddings)
    same = pids[:, None] == pids[None, :]
    eye = torch.eye(len(pids), dtype=torch.bool, device=pids.device)
    pos, neg = same & ~eye, ~same
    valid = pos.any(1) & neg.any(1)
    d_ap = dist.masked_fill(~pos, float("-inf")).amax(1)
    d_an = dist.masked_fill(~neg, float("inf")).amin(1)
    gap = (d_ap - d_an)[valid]
    if gap.numel() == 0:
        return dist.sum() * 0.0
    per_anchor = F.softplus(gap) if soft else (gap + margin).clamp_min(0.0)
    return per_anchor.mean()


@dataclass
class LossParts:
    """The total loss and its two terms (Eq. 8)."""

    total: Tensor
    triplet: Tensor
    tv: Tensor


def san_loss(output: SANOutput, pids: Tensor, margin: float = 0.5, soft: bool = False, mu: float = 0.1,
             gather: Callable[[Tensor], Tensor] | None = None) -> LossParts:
    """Eq. 8: batch-hard triplet + ``mu`` * sum_i TV(A_i).

    ``gather`` (across processes: :func:`san.distributed.gather_rows`) makes the triplet term
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
    triplet = batch_hard_triplet(embeddings, gather(pids) if gather else pids, margin, soft)
    tv = output.tv_penalty()
    return LossParts(triplet + mu * tv, triplet, tv)
