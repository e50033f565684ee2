"""Retrieval metrics for re-ID (CMC, mAP), pure NumPy so torch-free boxes can use them.

Market-1501 protocol: for each query, gallery entries with the query's pid *and* camera
are removed (junk); a query whose remaining gallery holds no entry of its pid is skipped
and counted. Ranking sorts by distance, ties broken by gallery index (stable sort), so
results are deterministic. AP is the non-interpolated mean of the precision at each true
match; CMC[k] is the fraction of valid queries with a true match within the top k + 1.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class QueryScores:
    """Per valid query, in query order: its AP and the rank (1-based) of its first true match.

    Two rankings of the same queries and gallery have the same valid queries, so their
    scores pair up element by element (:func:`paired_map_delta`, :func:`paired_rank1_delta`).
    """

    ap: np.ndarray
    first_rank: np.ndarray


@dataclass(frozen=True)
class RetrievalResult:
    """CMC curve (length ``max_rank``), mAP, how many queries counted, and (for the
    Market-1501 protocol) each valid query's scores."""

    cmc: np.ndarray
    mAP: float
    num_valid_queries: int
    num_skipped_queries: int
    per_query: QueryScores | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class _Scores:
    """Per-query scores of some queries plus the skipped count: chunks concatenate."""

    ap: np.ndarray
    first_rank: np.ndarray
    skipped: int

    def __add__(self, other: _Scores) -> _Scores:
        return _Scores(
            np.concatenate([self.ap, other.ap]),
            np.concatenate([self.first_rank, other.first_rank]),
            self.skipped + other.skipped,
        )

    def result(self, max_rank: int) -> RetrievalResult:
        if len(self.ap) == 0:
            raise ValueError("no query has a true match in the gallery (after junk removal)")
        cmc = (self.first_rank[:, None] <= np.arange(1, max_rank + 1)).mean(axis=0)
        return RetrievalResult(
            cmc, float(self.ap.mean()), len(self.ap), self.skipped, QueryScores(self.ap, self.first_rank)
        )


_NO_SCORES = _Scores(np.zeros(0), np.zeros(0, np.int64), 0)


def _relevance(
    q_pids: np.ndarray, g_pids: np.ndarray, q_camids: np.ndarray, g_camids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(same pid, junk) boolean matrices (nq, ng); gallery labels are (ng,) or per query (nq, ng)."""
    same_pid = q_pids[:, None] == np.atleast_2d(g_pids)
    junk = same_pid & (q_camids[:, None] == np.atleast_2d(g_camids))
    return same_pid, junk


def _scores(distmat: np.ndarray, same_pid: np.ndarray, junk: np.ndarray) -> _Scores:
    """Rank every query row of ``distmat``: AP and first-match rank of each valid query."""
    nq = distmat.shape[0]
    order = np.argsort(distmat, axis=1, kind="stable")  # ties: lower gallery index first
    keep = ~np.take_along_axis(junk, order, axis=1)
    hits = np.take_along_axis(same_pid, order, axis=1) & keep
    rank = np.cumsum(keep, axis=1, dtype=np.int32)  # 1-based rank among kept entries
    num_rel = hits.sum(axis=1)
    valid = num_rel > 0

    q_idx, g_idx = np.nonzero(hits)  # row-major: each query's hits in rank order
    hit_rank = rank[q_idx, g_idx]
    first_hit = np.cumsum(num_rel) - num_rel  # index of each query's first hit in hit_rank
    nth_hit = np.arange(1, len(q_idx) + 1) - np.repeat(first_hit, num_rel)
    precision_sum = np.bincount(q_idx, weights=nth_hit / hit_rank, minlength=nq)
    ap = precision_sum[valid] / num_rel[valid]
    return _Scores(ap, hit_rank[first_hit[valid]].astype(np.int64), int(nq - valid.sum()))


def _as_labels(*labels: np.ndarray) -> list[np.ndarray]:
    """Each label sequence as a flat array."""
    return [np.asarray(x).reshape(-1) for x in labels]


def _check_shapes(
    shape: tuple[int, int], q_pids: np.ndarray, g_pids: np.ndarray, q_camids: np.ndarray, g_camids: np.ndarray
) -> None:
    """Raise ValueError unless the labels fit a (num_query, num_gallery) problem of ``shape``."""
    nq, ng = shape
    if not (len(q_pids) == len(q_camids) == nq and len(g_pids) == len(g_camids) == ng):
        raise ValueError(
            f"expected {nq} query and {ng} gallery labels, got pids/camids of lengths "
            f"{len(q_pids)}/{len(q_camids)} (query) and {len(g_pids)}/{len(g_camids)} (gallery)"
        )


def evaluate_ranking(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 50,
) -> RetrievalResult:
    """CMC/mAP of a (num_query, num_gallery) distance matrix under the Market-1501 protocol."""
    distmat = np.asarray(distmat)
    q_pids, g_pids, q_camids, g_camids = _as_labels(q_pids, g_pids, q_camids, g_camids)
    _check_shapes(distmat.shape, q_pids, g_pids, q_camids, g_camids)
    return _scores(distmat, *_relevance(q_pids, g_pids, q_camids, g_camids)).result(max_rank)


def euclidean_distance(q_feats: np.ndarray, g_feats: np.ndarray) -> np.ndarray:
    """Euclidean distances (nq, ng), in the features' float precision (at least float32)."""
    dtype = np.result_type(q_feats, g_feats, np.float32)
    q, g = np.asarray(q_feats, dtype), np.asarray(g_feats, dtype)
    squared = (q * q).sum(1)[:, None] + (g * g).sum(1)[None, :] - 2 * (q @ g.T)
    return np.sqrt(np.maximum(squared, 0))


def euclidean_distance_chunks(
    q_feats: np.ndarray, g_feats: np.ndarray, chunk: int = 1024
) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield (query slice, distances of those queries to the whole gallery), chunk rows at a time."""
    for start in range(0, len(q_feats), chunk):
        rows = slice(start, min(start + chunk, len(q_feats)))
        yield rows, euclidean_distance(q_feats[rows], g_feats)


def smallest_k(dist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``dist``, the columns of its ``k`` smallest values and those values, by
    value then by column (deterministic ties); ``k`` must not exceed the column count."""
    cols = np.argpartition(dist, k - 1, axis=1)[:, :k] if k < dist.shape[1] else \
        np.broadcast_to(np.arange(dist.shape[1]), dist.shape)
    values = np.take_along_axis(dist, cols, axis=1)
    order = np.lexsort((cols, values), axis=1)
    return np.take_along_axis(cols, order, axis=1), np.take_along_axis(values, order, axis=1)


def evaluate_embeddings(
    q_feats: np.ndarray,
    g_feats: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 50,
    chunk: int = 1024,
) -> RetrievalResult:
    """Euclidean-distance CMC/mAP, ``chunk`` queries at a time.

    Peak memory is about ``chunk * num_gallery * 20`` bytes (distances, sort order,
    ranks, masks): roughly 400 MB for 1024 queries against a 20k gallery.
    """
    q_pids, g_pids, q_camids, g_camids = _as_labels(q_pids, g_pids, q_camids, g_camids)
    _check_shapes((len(q_feats), len(g_feats)), q_pids, g_pids, q_camids, g_camids)
    total = _NO_SCORES
    for rows, dist in euclidean_distance_chunks(q_feats, g_feats, chunk):
        total = total + _scores(dist, *_relevance(q_pids[rows], g_pids, q_camids[rows], g_camids))
    return total.result(max_rank)


def _sample_one_per_id(g_pids: np.ndarray, junk: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per query, one random non-junk gallery column per pid: (nq, num_pids), ascending."""
    keys = rng.random(junk.shape)
    keys[junk] = -1.0  # junk is drawn only when all of that pid's entries are junk
    by_pid_then_key = np.lexsort((keys, np.broadcast_to(g_pids, junk.shape)), axis=-1)
    group_last = np.cumsum(np.unique(g_pids, return_counts=True)[1]) - 1
    return np.sort(by_pid_then_key[:, group_last], axis=1)  # keep gallery order for ties


def cuhk03_single_shot(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    repeats: int = 10,
    seed: int = 0,
    max_rank: int = 50,
) -> RetrievalResult:
    """CUHK03 classic single-shot CMC/mAP, averaged over ``repeats`` seeded draws.

    In each repeat every query sees one gallery image per pid, drawn at random among the
    entries that survive junk removal (so a query's true match comes from the other camera).
    """
    distmat = np.asarray(distmat)
    q_pids, g_pids, q_camids, g_camids = _as_labels(q_pids, g_pids, q_camids, g_camids)
    _check_shapes(distmat.shape, q_pids, g_pids, q_camids, g_camids)
    same_pid, junk = _relevance(q_pids, g_pids, q_camids, g_camids)
    rng = np.random.default_rng(seed)
    rows = np.arange(len(q_pids))[:, None]
    results = []
    for _ in range(repeats):
        cols = _sample_one_per_id(g_pids, junk, rng)
        scores = _scores(distmat[rows, cols], same_pid[rows, cols], junk[rows, cols])
        results.append(scores.result(max_rank))
    return RetrievalResult(
        np.mean([r.cmc for r in results], axis=0),
        float(np.mean([r.mAP for r in results])),
        results[0].num_valid_queries,  # the same in every repeat: a kept match is always drawn
        results[0].num_skipped_queries,
    )


def paired_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``a`` with the same row of ``b``, in float64; two
    zero rows count as identical (1), a zero row against another as unrelated (0)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    norm_a, norm_b = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    norms = norm_a * norm_b
    both_zero = (norm_a == 0) & (norm_b == 0)
    return np.where(both_zero, 1.0, (a * b).sum(axis=1) / np.where(norms > 0, norms, 1.0))


# -- paired differences of two rankings of the same queries --------------------------------

#: Two-sided 95 % normal quantile.
Z95 = 1.959963984540054


@dataclass(frozen=True)
class PairedDelta:
    """``b`` minus ``a`` over the same queries, in points, with a 95 % confidence interval.

    The interval treats the queries as independent draws (gallery fixed) and uses the
    normal approximation of the mean of per-query differences: it says how far the
    measured delta can be from the one on more queries of the same kind.
    """

    delta: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def paired_delta(differences: np.ndarray) -> PairedDelta:
    """Mean of per-query differences (fractions, e.g. AP or rank-1 hits averaged over draws)
    with its 95 % interval over queries, in points."""
    n = len(differences)
    if n < 2:
        raise ValueError(f"a paired interval needs at least 2 queries, got {n}")
    mean = float(differences.mean())
    half = Z95 * float(differences.std(ddof=1)) / math.sqrt(n)
    return PairedDelta(100 * mean, 100 * (mean - half), 100 * (mean + half))


def _check_paired(a: QueryScores | None, b: QueryScores | None) -> tuple[QueryScores, QueryScores]:
    if a is None or b is None:
        raise ValueError("paired deltas need per-query scores (RetrievalResult.per_query of the Market protocol)")
    if len(a.ap) != len(b.ap):
        raise ValueError(f"paired scores need the same valid queries, got {len(a.ap)} and {len(b.ap)}")
    return a, b


def paired_map_delta(a: QueryScores | None, b: QueryScores | None) -> PairedDelta:
    """mAP of ``b`` minus mAP of ``a`` in points, with its 95 % interval over queries."""
    a, b = _check_paired(a, b)
    return paired_delta(b.ap - a.ap)


@dataclass(frozen=True)
class Rank1Change:
    """How rank-1 changed from ranking ``a`` to ranking ``b`` of the same queries.

    ``gained``/``lost``: queries whose first true match moved to / away from rank 1 (the
    discordant pairs); ``p_value``: exact two-sided McNemar test that gains and losses are
    equally likely, i.e. that the change is rounding noise rather than drift.
    """

    delta: PairedDelta
    gained: int
    lost: int
    p_value: float


def mcnemar_exact(gained: int, lost: int) -> float:
    """Two-sided exact McNemar p-value: P(a split at least this lopsided | Binomial(n, 1/2))."""
    n, k = gained + lost, min(gained, lost)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)


def paired_rank1_delta(a: QueryScores | None, b: QueryScores | None) -> Rank1Change:
    """Rank-1 of ``b`` minus rank-1 of ``a``: points with a 95 % interval, and the McNemar test."""
    a, b = _check_paired(a, b)
    hit_a, hit_b = a.first_rank == 1, b.first_rank == 1
    gained, lost = int((hit_b & ~hit_a).sum()), int((hit_a & ~hit_b).sum())
    return Rank1Change(paired_delta(hit_b.astype(float) - hit_a), gained, lost, mcnemar_exact(gained, lost))
