"""CMC/mAP: hand-computed cases, a brute-force reference, chunking, CUHK03 single-shot;
paired deltas: hand-computed intervals, McNemar by enumeration, interval coverage."""

from __future__ import annotations

import itertools
import statistics

import numpy as np
import pytest

from san.evaluation.metrics import (
    Z95,
    QueryScores,
    RetrievalResult,
    cuhk03_single_shot,
    euclidean_distance,
    evaluate_embeddings,
    evaluate_ranking,
    mcnemar_exact,
    paired_cosine,
    paired_map_delta,
    paired_rank1_delta,
)


def reference(distmat, q_pids, g_pids, q_camids, g_camids, max_rank) -> RetrievalResult:
    """One query at a time, in plain Python, straight from the protocol's definition."""
    cmc_counts, aps, firsts, skipped = [0] * max_rank, [], [], 0
    for i in range(len(q_pids)):
        ranked = sorted(range(len(g_pids)), key=lambda j: (distmat[i][j], j))
        kept = [j for j in ranked if not (g_pids[j] == q_pids[i] and g_camids[j] == q_camids[i])]
        is_match = [g_pids[j] == q_pids[i] for j in kept]
        if not any(is_match):
            skipped += 1
            continue
        precisions, found = [], 0
        for rank, match in enumerate(is_match, start=1):
            if match:
                found += 1
                precisions.append(found / rank)
        aps.append(sum(precisions) / len(precisions))
        first = is_match.index(True)
        firsts.append(first + 1)
        for k in range(max_rank):
            cmc_counts[k] += first <= k
    scores = QueryScores(np.array(aps), np.array(firsts))
    return RetrievalResult(np.array(cmc_counts) / len(aps), sum(aps) / len(aps), len(aps), skipped, scores)


def test_hand_computed_junk_removal_and_skipped_query() -> None:
    g_pids = np.array([2, 1, 1, 3, 1, 0])
    g_cams = np.array([1, 0, 1, 0, 1, 1])
    q_pids, q_cams = np.array([1, 2, 3]), np.array([0, 1, 1])
    distmat = np.array(
        [
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
            [0.9, 0.8, 0.7, 0.1, 0.6, 0.5],
        ]
    )
    result = evaluate_ranking(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=5)
    # query 0 (pid 1, cam 0): g1 is junk (same pid, same camera). Kept ranking g0 g2 g3 g4 g5,
    #   true matches g2 (rank 2) and g4 (rank 4): AP = (1/2 + 2/4) / 2 = 1/2, first hit rank 2.
    # query 1 (pid 2, cam 1): its only pid-2 entry g0 is junk -> skipped.
    # query 2 (pid 3, cam 1): g3 (cam 0) ranks first: AP = 1/1 = 1, first hit rank 1.
    # mAP = (1/2 + 1) / 2 = 3/4; CMC@1 = 1/2 (only query 2), CMC@2.. = 2/2.
    assert result.num_valid_queries == 2
    assert result.num_skipped_queries == 1
    assert result.mAP == pytest.approx(3 / 4)
    np.testing.assert_allclose(result.cmc, [1 / 2, 1, 1, 1, 1])


def test_hand_computed_three_matches() -> None:
    # one query (pid 7, cam 0); matches sit at ranks 1, 3 and 6 of 6 (all other camera):
    # AP = (1/1 + 2/3 + 3/6) / 3 = 13/18.
    g_pids = np.array([7, 4, 7, 4, 5, 7])
    result = evaluate_ranking(np.arange(6.0)[None], [7], g_pids, [0], np.ones(6), max_rank=3)
    assert result.mAP == pytest.approx(13 / 18)
    np.testing.assert_array_equal(result.cmc, [1, 1, 1])


def test_ties_broken_by_gallery_index() -> None:
    # all distances equal: ranking is gallery order g0 g1 g2 g3, matches g1 and g3
    # AP = (1/2 + 2/4) / 2 = 1/2, first hit rank 2.
    g_pids = np.array([2, 1, 3, 1])
    result = evaluate_ranking(np.ones((1, 4)), [1], g_pids, [0], np.ones(4), max_rank=4)
    assert result.mAP == pytest.approx(1 / 2)
    np.testing.assert_array_equal(result.cmc, [0, 1, 1, 1])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_bruteforce_reference_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    nq, ng, max_rank = 25, 60, 70  # max_rank beyond the gallery size on purpose
    distmat = rng.integers(0, 4, (nq, ng)).astype(np.float64)  # many ties
    q_pids, g_pids = rng.integers(0, 10, nq), rng.integers(0, 8, ng)  # pids 8, 9: no match
    q_cams, g_cams = rng.integers(0, 3, nq), rng.integers(0, 3, ng)
    got = evaluate_ranking(distmat, q_pids, g_pids, q_cams, g_cams, max_rank)
    want = reference(distmat, q_pids, g_pids, q_cams, g_cams, max_rank)
    assert (got.num_valid_queries, got.num_skipped_queries) == (
        want.num_valid_queries,
        want.num_skipped_queries,
    )
    assert got.num_skipped_queries > 0
    assert got.num_valid_queries + got.num_skipped_queries == nq
    assert got.mAP == pytest.approx(want.mAP, abs=1e-12)
    np.testing.assert_allclose(got.cmc, want.cmc, atol=1e-12)
    np.testing.assert_allclose(got.per_query.ap, want.per_query.ap, atol=1e-12)
    np.testing.assert_array_equal(got.per_query.first_rank, want.per_query.first_rank)


def test_chunked_embeddings_equal_full_distance_matrix() -> None:
    rng = np.random.default_rng(3)
    # small integer features: distances are exact, and repeated rows create ties
    q_feats = rng.integers(-2, 3, (23, 4)).astype(np.float32)
    g_feats = rng.integers(-2, 3, (41, 4)).astype(np.float32)
    q_pids, g_pids = rng.integers(0, 6, 23), rng.integers(0, 6, 41)
    q_cams, g_cams = rng.integers(0, 2, 23), rng.integers(0, 2, 41)
    distmat = euclidean_distance(q_feats, g_feats)
    np.testing.assert_allclose(
        distmat, np.linalg.norm(q_feats[:, None] - g_feats[None], axis=2), atol=1e-5
    )
    full = evaluate_ranking(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=10)
    for chunk in (1, 7, 23, 100):
        got = evaluate_embeddings(q_feats, g_feats, q_pids, g_pids, q_cams, g_cams, 10, chunk)
        np.testing.assert_array_equal(got.cmc, full.cmc)
        np.testing.assert_array_equal(got.per_query.first_rank, full.per_query.first_rank)
        assert got.mAP == pytest.approx(full.mAP, abs=1e-12)
        assert got.num_skipped_queries == full.num_skipped_queries


def test_errors_say_what_was_expected() -> None:
    with pytest.raises(ValueError, match="expected 2 query and 3 gallery labels"):
        evaluate_ranking(np.zeros((2, 3)), [1, 2], [1, 2], [0, 0], [1, 1])
    with pytest.raises(ValueError, match="no query has a true match"):
        evaluate_ranking(np.zeros((1, 2)), [1], [2, 3], [0], [1, 1])


def test_single_shot_with_one_image_per_id_is_plain_ranking() -> None:
    rng = np.random.default_rng(4)
    distmat = rng.random((6, 5))
    q_pids, q_cams = np.array([0, 1, 2, 3, 4, 0]), np.zeros(6, int)
    g_pids, g_cams = np.array([4, 3, 2, 1, 0]), np.ones(5, int)
    got = cuhk03_single_shot(distmat, q_pids, g_pids, q_cams, g_cams, repeats=3, max_rank=5)
    want = evaluate_ranking(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=5)
    np.testing.assert_allclose(got.cmc, want.cmc)
    assert got.mAP == pytest.approx(want.mAP)


def test_single_shot_never_draws_junk_and_averages_draws() -> None:
    # query pid 1, cam 0. g0 = junk (pid 1, cam 0, nearest), g2 = the only valid match (d=2).
    # pid 2 has g1 (d=1) and g3 (d=3): drawing g1 puts the match at rank 2 (AP 1/2),
    # drawing g3 at rank 1 (AP 1). Averaged over draws mAP lies strictly between.
    distmat = np.array([[0.0, 1.0, 2.0, 3.0]])
    args = (distmat, [1], [1, 2, 1, 2], [0], [0, 1, 1, 1])
    result = cuhk03_single_shot(*args, repeats=40, seed=5, max_rank=2)
    assert 0.6 < result.mAP < 0.9
    assert result.cmc[1] == 1.0  # the match is always within the top 2: junk never drawn
    assert 0.0 < result.cmc[0] < 1.0
    assert (result.num_valid_queries, result.num_skipped_queries) == (1, 0)
    again = cuhk03_single_shot(*args, repeats=40, seed=5, max_rank=2)
    assert again.mAP == result.mAP


def test_paired_deltas_hand_computed() -> None:
    # four queries; rank-1 hits a: 1 1 0 0, b: 1 0 1 1 -> per-query differences 0 -1 1 1
    a = QueryScores(np.array([1.0, 1.0, 0.5, 0.25]), np.array([1, 1, 2, 4]))
    b = QueryScores(np.array([1.0, 0.5, 1.0, 1.0]), np.array([1, 3, 1, 1]))
    change = paired_rank1_delta(a, b)
    assert (change.gained, change.lost) == (2, 1)
    assert change.p_value == pytest.approx(1.0)  # 2 vs 1 of 3: as likely as it gets
    half = Z95 * statistics.stdev([0, -1, 1, 1]) / 2
    assert change.delta.delta == pytest.approx(25.0)
    assert (change.delta.low, change.delta.high) == pytest.approx((25 - 100 * half, 25 + 100 * half))
    mean_ap = paired_map_delta(a, b)
    diffs = [0.0, -0.5, 0.5, 0.75]
    assert mean_ap.delta == pytest.approx(100 * statistics.mean(diffs))
    assert mean_ap.half_width == pytest.approx(100 * Z95 * statistics.stdev(diffs) / 2)
    with pytest.raises(ValueError, match="same valid queries"):
        paired_rank1_delta(a, QueryScores(np.ones(3), np.ones(3, int)))
    with pytest.raises(ValueError, match="per-query scores"):
        paired_map_delta(a, None)


@pytest.mark.parametrize("gained, lost", [(0, 0), (0, 3), (1, 4), (3, 3), (2, 9), (3, 12)])
def test_mcnemar_matches_enumeration(gained: int, lost: int) -> None:
    """Exact two-sided p: the probability, under fair coin flips for the n discordant
    queries, of a split at least as far from n/2 as the observed one."""
    n = gained + lost
    observed = abs(gained - n / 2)
    extreme = sum(abs(sum(flips) - n / 2) >= observed for flips in itertools.product((0, 1), repeat=n))
    assert mcnemar_exact(gained, lost) == pytest.approx(extreme / 2**n if n else 1.0)
    assert mcnemar_exact(lost, gained) == mcnemar_exact(gained, lost)


def _simulated_change(rng: np.random.Generator, n: int, gain: float, lose: float):
    """Two rankings of ``n`` queries: rank-1 hit rate 0.4 in ``a``; each query independently
    gains rank-1 in ``b`` with probability ``gain`` and loses it with ``lose`` (both over all
    queries), so the true change is ``100 * (gain - lose)`` points."""
    hit_a = rng.random(n) < 0.4
    u = rng.random(n)
    hit_b = np.where(hit_a, u >= lose / 0.4, u < gain / 0.6)
    scores = [QueryScores(np.zeros(n), np.where(hit, 1, 2)) for hit in (hit_a, hit_b)]
    return paired_rank1_delta(*scores)


def test_rank1_interval_coverage_and_mcnemar_error_rates() -> None:
    """2000 simulated splits of 600 queries: the 95 % interval holds the true change in
    93.5-96.5 % of them; McNemar flags an unchanged model in at most 6.5 % (exact, so
    conservative) and a 2-point change far more often."""
    rng = np.random.default_rng(0)
    trials, n = 2000, 600
    real = [_simulated_change(rng, n, 0.06, 0.04) for _ in range(trials)]
    null = [_simulated_change(rng, n, 0.05, 0.05) for _ in range(trials)]
    covered = np.mean([c.delta.low <= 2.0 <= c.delta.high for c in real])
    assert 0.935 <= covered <= 0.965
    false_alarms = np.mean([c.p_value < 0.05 for c in null])
    power = np.mean([c.p_value < 0.05 for c in real])
    assert false_alarms <= 0.065
    assert power > 4 * false_alarms


def test_paired_cosine_hand_computed() -> None:
    a = np.array([[1.0, 0.0], [3.0, 4.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.0]], np.float32)
    b = np.array([[0.0, 2.0], [6.0, 8.0], [-2.0, -2.0], [0.0, 0.0], [1.0, 0.0]], np.float32)
    got = paired_cosine(a, b)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, [0.0, 1.0, -1.0, 1.0, 0.0], atol=1e-12)  # zero rows: alike 1, else 0
