"""k-reciprocal re-ranking, dense form (Z. Zhong, L. Zheng, D. Cao and S. Li, "Re-ranking
Person Re-identification with k-reciprocal Encoding", CVPR 2017).

For every image p of query + gallery (torch-free, NumPy):

1. distances are squared and scaled by each column's maximum;
2. R(p, k1): p's k1 + 1 nearest images that have p among their own k1 + 1 nearest;
3. R*(p, k1): R(p, k1) joined with R(q, k1/2) of each q in it whose set shares more than
   two thirds of its members with R(p, k1);
4. V_p: weights exp(-d(p, g)) on the members g of R*(p, k1), normalised to sum 1;
5. local query expansion: V_p becomes the mean of V over p's k2 nearest images;
6. Jaccard distance d_J(p, g) = 1 - sum min(V_p, V_g) / sum max(V_p, V_g);
7. d* = (1 - lambda) d_J + lambda d.

The conventions (squared, column-scaled distances; "more than" two thirds; k1/2 rounded half
to even; weights normalised) are those of the authors' published implementation
(github.com/zhunzhong07/person-re-ranking), which this agrees with to 1e-5 on random cases
(tests/san/test_rerank.py checks an oracle written from the steps above).

The dense form holds (q + g)^2 float32 values several times (4 (q + g)^2 bytes each), so it
refuses splits above :data:`MAX_IMAGES`. Time grows as (q + g)^2 too.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

#: Query + gallery images the dense form accepts: 4 * 20000^2 bytes = 1.6 GB per matrix.
MAX_IMAGES = 20000


@dataclass(frozen=True)
class RerankParams:
    """k1, k2 and lambda of the paper (defaults as there: 20, 6, 0.3)."""

    k1: int = 20
    k2: int = 6
    lam: float = 0.3

    def __post_init__(self) -> None:
        if self.k1 < 1 or self.k2 < 1 or not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"re-ranking needs k1 >= 1, k2 >= 1 and 0 <= lambda <= 1, got {self}")


def add_rerank_arguments(parser: argparse.ArgumentParser) -> None:
    """``--rerank`` and its ``--k1``, ``--k2``, ``--lambda`` for a command that scores a split."""
    group = parser.add_argument_group("k-reciprocal re-ranking (Zhong et al., CVPR 2017; dense)")
    group.add_argument("--rerank", action="store_true", help="rank by re-ranked distances")
    group.add_argument("--k1", type=int, default=RerankParams.k1, help="k1 (default %(default)s)")
    group.add_argument("--k2", type=int, default=RerankParams.k2, help="k2 (default %(default)s)")
    group.add_argument("--lambda", dest="lam", type=float, default=RerankParams.lam,
                       help="weight of the original distance (default %(default)s)")


def rerank_params(args: argparse.Namespace) -> RerankParams | None:
    """The re-ranking ``args`` ask for, or None."""
    return RerankParams(args.k1, args.k2, args.lam) if args.rerank else None


def _reciprocal(rank: np.ndarray, i: int, k: int) -> np.ndarray:
    """R(i, k): those of i's k + 1 nearest that have i among their own k + 1 nearest."""
    forward = rank[i, : k + 1]
    return forward[(rank[forward, : k + 1] == i).any(axis=1)]


def k_reciprocal_distances(q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray,
                           params: RerankParams = RerankParams()) -> np.ndarray:
    """Re-ranked query x gallery distances from the three Euclidean distance matrices."""
    n_query, n = len(q_q), len(q_q) + len(g_g)
    if n > MAX_IMAGES:
        raise ValueError(f"dense re-ranking holds (q + g)^2 values several times; {n} images exceed its "
                         f"{MAX_IMAGES} (4 * {n}^2 bytes = {4 * n * n / 2**30:.1f} GiB per matrix); "
                         "re-rank a smaller split")
    dist = np.block([[q_q, q_g], [q_g.T, g_g]]).astype(np.float32) ** 2
    dist = (dist / dist.max(axis=0)).T
    rank = np.argsort(dist, axis=1)
    half = int(np.around(params.k1 / 2))
    weights = np.zeros((n, n), np.float32)
    for i in range(n):
        members = _reciprocal(rank, i, params.k1)
        expansion = [members]
        for candidate in members:
            theirs = _reciprocal(rank, candidate, half)
            if len(np.intersect1d(theirs, members)) > 2 / 3 * len(theirs):
                expansion.append(theirs)
        support = np.unique(np.concatenate(expansion))
        w = np.exp(-dist[i, support])
        weights[i, support] = w / w.sum()
    if params.k2 > 1:  # row by row: a fancy-indexed mean would hold n x k2 x n values
        expanded = np.empty_like(weights)
        for i in range(n):
            expanded[i] = weights[rank[i, : params.k2]].mean(axis=0)
        weights = expanded
    jaccard = np.empty((n_query, n), np.float32)
    for i in range(n_query):
        support = np.flatnonzero(weights[i])
        shared = np.minimum(weights[i, support], weights[:, support]).sum(axis=1)
        jaccard[i] = 1 - shared / (2 - shared)  # sum max = sum V_p + sum V_g - sum min, each V sums to 1
    final = (1 - params.lam) * jaccard + params.lam * dist[:n_query]
    return final[:, n_query:]
