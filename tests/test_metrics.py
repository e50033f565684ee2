"""CMC/mAP: hand-computed cases, a brute-force reference, chunking, CUHK03 single-shot."""

from __future__ import annotations

import numpy as np
import pytest

from san.metrics import (
    RetrievalResult,
    cmc_map,
    cuhk03_single_shot,
    euclidean_distance,
    evaluate_embeddings,
    evaluate_ranking,
)


def reference(distmat, q_pids, g_pids, q_camids, g_camids, max_rank) -> RetrievalResult:
    """One query at a time, in plain Python, straight from the protocol's definition."""
    cmc_counts, aps, skipped = [0] * max_rank, [], 0
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
        for k in range(max_rank):
            cmc_counts[k] += first <= k
    return RetrievalResult(np.array(cmc_counts) / len(aps), sum(aps) / len(aps), len(aps), skipped)


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
    cmc, mAP = cmc_map(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=5)
    np.testing.assert_array_equal(cmc, result.cmc)
    assert mAP == result.mAP


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
