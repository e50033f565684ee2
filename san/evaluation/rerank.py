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

The dense form (:func:`k_reciprocal_distances`, for evaluation) holds (q + g)^2 float32
values several times (4 (q + g)^2 bytes each), so it refuses splits above :data:`MAX_IMAGES`.
Time grows as (q + g)^2 too.

The sparse form (:class:`SparseReranker`, for search) re-ranks one query's top candidates
over the universe "this query + the stored rows", with every neighbour list taken from a
search index: it touches only the lists that the steps above read, and caches them, so memory
grows with k1 times the rows touched (at most k1 N), never N^2. Two things differ from the
dense form, by construction: distances are scaled by one constant (an upper bound of every
squared distance) instead of each column's maximum, which needs all N^2 of them; and the
universe holds one query, not all of them. With an exact index it equals the dense form given
the same scale and one query (tests/san/test_rerank.py); with an approximate index its lists
are that index's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

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


def _reciprocal(rank: np.ndarray, i: int, k: int) -> np.ndarray:
    """R(i, k): those of i's k + 1 nearest that have i among their own k + 1 nearest."""
    forward = rank[i, : k + 1]
    return forward[(rank[forward, : k + 1] == i).any(axis=1)]


def k_reciprocal_distances(q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray,
                           params: RerankParams = RerankParams(), scale: float | None = None) -> np.ndarray:
    """Re-ranked query x gallery distances from the three Euclidean distance matrices.

    Squared distances are scaled by each column's maximum (the authors' convention), or by
    ``scale`` when given (the sparse form's convention).
    """
    n_query, n = len(q_q), len(q_q) + len(g_g)
    if n > MAX_IMAGES:
        raise ValueError(f"dense re-ranking holds (q + g)^2 values several times; {n} images exceed its "
                         f"{MAX_IMAGES} (4 * {n}^2 bytes = {4 * n * n / 2**30:.1f} GiB per matrix); "
                         "re-rank a smaller split, or search with the sparse form (san-search query --rerank)")
    dist = np.block([[q_q, q_g], [q_g.T, g_g]]).astype(np.float32) ** 2
    dist = (dist / dist.max(axis=0)).T if scale is None else dist / np.float32(scale)
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


#: ``neighbours(vectors, k)``: the rows of the ``k`` stored vectors nearest each of ``vectors``.
Neighbours = Callable[[np.ndarray, int], np.ndarray]


class Rows(Protocol):
    """Stored vectors read a few rows at a time: an array, a memory map, or a view that
    transforms rows as they are read."""

    def __len__(self) -> int: ...

    def __getitem__(self, rows: int | slice) -> np.ndarray: ...
_QUERY = -1  # the query's id in the universe "query + stored rows"


class SparseReranker:
    """k-reciprocal re-ranking of one query's candidates, neighbour lists from an index.

    ``vectors`` are the stored rows (memory-mapped is fine; only touched rows are read), in the
    space the distances are Euclidean in (unit vectors for cosine search); ``neighbours``
    searches them. Lists of stored rows are cached across queries.
    """

    def __init__(self, vectors: Rows, neighbours: Neighbours, params: RerankParams = RerankParams(),
                 scale: float | None = None) -> None:
        self.vectors, self.neighbours, self.params = vectors, neighbours, params
        self.scale = float(scale) if scale is not None else squared_distance_bound(vectors)
        self.half = int(np.around(params.k1 / 2))
        self._stored: dict[int, np.ndarray] = {}  # row -> its k1 + 1 nearest stored rows, by exact distance

    def rerank(self, query: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Re-ranked distances of ``query`` (D,) to the stored rows ``candidates``."""
        self.query = np.asarray(query, np.float64)
        self.scale_q = max(self.scale, 4 * float(self.query @ self.query))
        self._lists: dict[int, np.ndarray] = {}  # lists and weights of this query's universe
        self._v: dict[int, dict[int, float]] = {}
        k2 = self.params.k2
        expanded_q = self._expanded(_QUERY, k2)
        final = np.empty(len(candidates))
        for i, g in enumerate(candidates):
            shared = _sparse_min_sum(expanded_q, self._expanded(int(g), k2))
            jaccard = 1 - shared / (2 - shared)
            final[i] = (1 - self.params.lam) * jaccard + self.params.lam * self._d2(_QUERY, np.array([g]))[0] / self.scale_q
        return final

    # -- the universe "query + stored rows" --------------------------------------------------
    def _vector(self, p: int) -> np.ndarray:
        return self.query if p == _QUERY else np.asarray(self.vectors[p], np.float64)

    def _d2(self, p: int, others: np.ndarray) -> np.ndarray:
        """Squared distances from ``p`` to ``others`` (ids; ``-1`` is the query)."""
        v = self._vector(p)
        rows = np.stack([self._vector(int(o)) for o in others]) if len(others) else np.empty((0, len(v)))
        return ((rows - v) ** 2).sum(axis=1)

    def _list(self, p: int) -> np.ndarray:
        """p's k1 + 1 nearest ids of the universe, nearest first (p itself first)."""
        if p in self._lists:
            return self._lists[p]
        k = self.params.k1 + 1
        if p == _QUERY:
            found = self.neighbours(self.query[None].astype(np.float32), k - 1)[0]
            ids = np.concatenate([[_QUERY], found[np.argsort(self._d2(_QUERY, found), kind="stable")]])
        else:
            if p not in self._stored:
                found = self.neighbours(np.asarray(self.vectors[p : p + 1], np.float32), k)[0]
                self._stored[p] = found[np.argsort(self._d2(p, found), kind="stable")]
            stored = self._stored[p]
            d_stored, d_query = self._d2(p, stored), self._d2(p, np.array([_QUERY]))[0]
            at = int(np.searchsorted(d_stored, d_query, side="right"))  # the query after equal distances
            ids = np.insert(stored, at, _QUERY)[:k]
        self._lists[p] = ids
        return ids

    def _reciprocal(self, p: int, k: int) -> np.ndarray:
        forward = self._list(p)[: k + 1]
        return np.array([c for c in forward if p in self._list(int(c))[: k + 1]], dtype=np.int64)

    def _weights(self, p: int) -> dict[int, float]:
        """V_p: exp(-d) over R*(p, k1), normalised to sum 1."""
        if p in self._v:
            return self._v[p]
        members = self._reciprocal(p, self.params.k1)
        expansion = [members]
        for c in members:
            theirs = self._reciprocal(int(c), self.half)
            if len(np.intersect1d(theirs, members)) > 2 / 3 * len(theirs):
                expansion.append(theirs)
        support = np.unique(np.concatenate(expansion))
        w = np.exp(-self._d2(p, support) / self.scale_q)
        self._v[p] = dict(zip(support.tolist(), (w / w.sum()).tolist()))
        return self._v[p]

    def _expanded(self, p: int, k2: int) -> dict[int, float]:
        """Local query expansion: the mean of V over p's k2 nearest (p included)."""
        total: dict[int, float] = {}
        nearest = self._list(p)[:k2] if k2 > 1 else np.array([p])
        for r in nearest:
            for j, w in self._weights(int(r)).items():
                total[j] = total.get(j, 0.0) + w / len(nearest)
        return total


def _sparse_min_sum(a: dict[int, float], b: dict[int, float]) -> float:
    small, large = (a, b) if len(a) <= len(b) else (b, a)
    return sum(min(w, large[j]) for j, w in small.items() if j in large)


def squared_distance_bound(vectors: Rows, block: int = 65536) -> float:
    """(2 max |x|)^2: no two of ``vectors`` are farther apart, squared (read in blocks)."""
    largest = max((float((np.asarray(vectors[i : i + block], np.float64) ** 2).sum(axis=1).max())
                   for i in range(0, len(vectors), block)), default=0.0)
    return 4 * largest
