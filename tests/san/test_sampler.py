"""PK sampler invariants: P distinct ids x K images, full coverage, determinism, sharding."""

from __future__ import annotations

from collections import Counter

import pytest

from san.data.sampler import PKSampler

# 11 ids: id 3 has a single image, id 7 two; the others 3..6 images.
PIDS = [pid for pid, n in zip(range(11), (3, 4, 5, 1, 6, 3, 4, 2, 5, 6, 3)) for _ in range(n)]


def batches(sampler: PKSampler, epoch: int) -> list[list[tuple[int, int]]]:
    sampler.set_epoch(epoch)
    return list(sampler)


@pytest.mark.parametrize("p, k", [(4, 4), (3, 2), (11, 3)])
def test_each_batch_has_p_distinct_ids_with_k_images_each(p: int, k: int) -> None:
    sampler = PKSampler(PIDS, p, k, seed=1)
    epoch = batches(sampler, 0)
    assert len(epoch) == len(sampler) == -(-11 // p)
    for batch in epoch:
        assert len(batch) == p * k
        counts = Counter(PIDS[index] for index, _ in batch)
        assert len(counts) == p and set(counts.values()) == {k}


def test_every_id_is_visited_once_per_epoch_and_only_top_ups_repeat() -> None:
    sampler = PKSampler(PIDS, 4, 2, seed=3)
    for epoch in range(5):
        visits = Counter()
        for batch in batches(sampler, epoch):
            visits.update({PIDS[index] for index, _ in batch})
        assert set(visits) == set(range(11))
        assert sum(visits.values()) - 11 == 4 * 3 - 11  # the last batch is topped up by one id


def test_images_with_and_without_replacement() -> None:
    sampler = PKSampler(PIDS, 11, 4, seed=0)
    (batch,) = batches(sampler, 0)
    by_id: dict[int, list[int]] = {}
    for index, _ in batch:
        by_id.setdefault(PIDS[index], []).append(index)
    assert by_id[3] == [PIDS.index(3)] * 4  # one image, drawn 4 times
    assert len(set(by_id[7])) <= 2  # two images: with replacement
    for pid in (1, 2, 4, 6, 8, 9):  # >= K images: without replacement
        assert len(set(by_id[pid])) == 4


def test_same_seed_and_epoch_give_the_same_batches() -> None:
    a, b = PKSampler(PIDS, 4, 2, seed=7), PKSampler(PIDS, 4, 2, seed=7)
    assert batches(a, 2) == batches(b, 2)
    assert batches(a, 2) != batches(a, 3)
    assert batches(a, 2) != batches(PKSampler(PIDS, 4, 2, seed=8), 2)
    seeds = [seed for batch in batches(a, 0) for _, seed in batch]
    assert len(set(seeds)) == len(seeds)  # every sample gets its own augmentation seed


@pytest.mark.parametrize("p, world", [(3, 2), (2, 3), (5, 2)])
def test_every_identity_of_a_step_is_on_exactly_one_rank(p: int, world: int) -> None:
    ranks = [PKSampler(PIDS, p, 2, seed=5, rank=r, world_size=world) for r in range(world)]
    single = PKSampler(PIDS, p * world, 2, seed=5)  # one process with the whole global batch
    for epoch in range(4):
        steps = [batches(sampler, epoch) for sampler in ranks]
        assert len({len(s) for s in steps}) == 1 and len(steps[0]) == -(-11 // (p * world))
        for step, whole in zip(zip(*steps), batches(single, epoch)):
            ids = [{PIDS[index] for index, _ in part} for part in step]
            assert all(len(i) == p for i in ids)
            assert len(set().union(*ids)) == p * world  # disjoint: each id on exactly one rank
            assert [key for part in step for key in part] == whole  # the 1-process batch, in rank order


def test_too_few_ids_or_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="only 11"):
        PKSampler(PIDS, 12, 2)
    with pytest.raises(ValueError, match="on each of 2 rank\\(s\\) needs 12, but the training set has only 11"):
        PKSampler(PIDS, 6, 2, world_size=2)
    with pytest.raises(ValueError, match="K >= 2"):
        PKSampler(PIDS, 4, 1)
    with pytest.raises(ValueError, match="rank"):
        PKSampler(PIDS, 4, 2, rank=2, world_size=2)
