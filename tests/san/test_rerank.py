"""k-reciprocal re-ranking against an oracle written from the paper's definitions, step by
step with Python sets (Zhong et al., CVPR 2017, Eqs. 1-12 with the authors' conventions)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from san.evaluation.metrics import euclidean_distance
from san.evaluation.rerank import MAX_IMAGES, RerankParams, SparseReranker, k_reciprocal_distances, squared_distance_bound


def oracle(q: np.ndarray, g: np.ndarray, k1: int, k2: int, lam: float, scale: float | None = None) -> np.ndarray:
    """The paper's re-ranked distance, one definition at a time, in float64; squared distances
    scaled by each row's largest (the authors' convention) or by ``scale``."""
    x = np.concatenate([q, g]).astype(np.float64)
    n, nq = len(x), len(q)
    sq = [[float(((x[a] - x[b]) ** 2).sum()) for b in range(n)] for a in range(n)]
    col_max = [max(sq[a][b] for a in range(n)) if scale is None else scale for b in range(n)]
    d = [[sq[a][b] / col_max[a] for b in range(n)] for a in range(n)]  # row p scaled by its largest distance
    order = [sorted(range(n), key=lambda j, i=i: d[i][j]) for i in range(n)]

    def nearest(i: int, k: int) -> list[int]:  # N(i, k): the k + 1 nearest, i itself first
        return order[i][: k + 1]

    def reciprocal(i: int, k: int) -> set[int]:  # R(i, k) = {g in N(i, k) : i in N(g, k)}
        return {g for g in nearest(i, k) if i in nearest(g, k)}

    half = int(round(k1 / 2))  # Python's round: half to even, as numpy's around
    v = []
    for p in range(n):
        r = reciprocal(p, k1)
        star = set(r)
        for cand in r:
            rc = reciprocal(cand, half)
            if len(rc & r) > 2 / 3 * len(rc):
                star |= rc
        total = sum(math.exp(-d[p][g]) for g in star)
        v.append({g: math.exp(-d[p][g]) / total for g in star})
    if k2 > 1:  # local query expansion over N(p, k2 - 1)
        v = [{g: sum(v[m].get(g, 0.0) for m in order[p][:k2]) / k2 for g in range(n)} for p in range(n)]
    out = np.zeros((nq, n - nq))
    for p in range(nq):
        for gi in range(nq, n):
            keys = set(v[p]) | set(v[gi])
            mins = sum(min(v[p].get(j, 0.0), v[gi].get(j, 0.0)) for j in keys)
            maxs = sum(max(v[p].get(j, 0.0), v[gi].get(j, 0.0)) for j in keys)
            out[p, gi - nq] = (1 - lam) * (1 - mins / maxs) + lam * d[p][gi]
    return out


@pytest.mark.parametrize(("seed", "nq", "ng", "k1", "k2", "lam"), [
    (0, 6, 30, 20, 6, 0.3), (1, 10, 25, 8, 3, 0.3), (2, 4, 40, 5, 1, 0.5), (3, 12, 20, 11, 4, 0.0),
])
def test_dense_rerank_equals_the_papers_definitions(seed: int, nq: int, ng: int, k1: int, k2: int,
                                                    lam: float) -> None:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(5, 8))  # clustered, so reciprocal sets are non-trivial
    q = centres[rng.integers(0, 5, nq)] + 0.4 * rng.normal(size=(nq, 8))
    g = centres[rng.integers(0, 5, ng)] + 0.4 * rng.normal(size=(ng, 8))
    got = k_reciprocal_distances(euclidean_distance(q, g), euclidean_distance(q, q), euclidean_distance(g, g),
                                 RerankParams(k1, k2, lam))
    np.testing.assert_allclose(got, oracle(q, g, k1, k2, lam), atol=1e-5)


def clustered(seed: int, nq: int, ng: int, dim: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(5, dim))
    return (centres[rng.integers(0, 5, nq)] + 0.4 * rng.normal(size=(nq, dim)),
            centres[rng.integers(0, 5, ng)] + 0.4 * rng.normal(size=(ng, dim)))


def exact_neighbours(g: np.ndarray) -> object:
    """Brute force: the rows of the k stored vectors nearest each query."""
    return lambda x, k: np.argsort(euclidean_distance(np.asarray(x, np.float64), g), axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize(("seed", "k1", "k2", "lam"), [(0, 20, 6, 0.3), (1, 8, 3, 0.3), (2, 5, 1, 0.5)])
def test_one_scale_dense_and_sparse_forms_equal_the_papers_definitions(seed: int, k1: int, k2: int,
                                                                        lam: float) -> None:
    q, g = clustered(seed, 5, 45)
    scale = squared_distance_bound(np.concatenate([q, g]))
    params = RerankParams(k1, k2, lam)
    dense = k_reciprocal_distances(euclidean_distance(q, g), euclidean_distance(q, q), euclidean_distance(g, g),
                                   params, scale=scale)
    np.testing.assert_allclose(dense, oracle(q, g, k1, k2, lam, scale), atol=1e-5)
    sparse = SparseReranker(g.astype(np.float32), exact_neighbours(g), params, scale)
    candidates = np.arange(len(g))[::-1]  # any order: each candidate gets its own distance
    for i in range(len(q)):  # the sparse universe holds one query
        np.testing.assert_allclose(sparse.rerank(q[i], candidates), oracle(q[i : i + 1], g, k1, k2, lam, scale)[0][candidates],
                                   atol=1e-5)


def test_sparse_rerank_reads_only_the_neighbourhoods_it_needs() -> None:
    q, g = clustered(4, 3, 20000, dim=16)
    calls: list[int] = []

    def neighbours(x: np.ndarray, k: int) -> np.ndarray:
        calls.append(len(x))
        return exact_neighbours(g)(x, k)

    sparse = SparseReranker(g.astype(np.float32), neighbours, RerankParams())
    top = exact_neighbours(g)(q[:1], 100)[0]
    sparse.rerank(q[0], top)
    touched = len(sparse._stored)
    assert touched < len(g) / 4  # lists of k1 + 1 rows for the rows it touched, not N^2 distances
    assert all(len(found) == 21 for found in sparse._stored.values())
    sparse.rerank(q[0], top)
    assert len(sparse._stored) == touched and sum(calls) == touched + 2  # cached across queries


def test_dense_rerank_refuses_what_it_cannot_hold() -> None:
    n = MAX_IMAGES // 2 + 1
    zeros = np.broadcast_to(np.float32(0), (n, n))  # no memory behind it: refused before any is read
    with pytest.raises(ValueError, match="exceed"):
        k_reciprocal_distances(zeros, zeros, zeros)
    with pytest.raises(ValueError, match="k1 >= 1"):
        RerankParams(k1=0)
