"""PK batch sampling (Hermans et al.): P identities x K images per batch.

An epoch visits every identity once: the ids are shuffled and cut into groups of P; the
last group is topped up with other ids so every batch has exactly P distinct ids. Each id
contributes K images, drawn without replacement when it has at least K, with replacement
otherwise. All randomness comes from ``(seed, epoch)``, so an epoch is reproducible on its
own (exact resume needs no RNG state), and every sample also carries its own augmentation
seed so the images do not depend on the number of data-loader workers.

Under DistributedDataParallel ``p`` is per rank: every step draws one global batch of
``p * world_size`` distinct identities and rank r takes the r-th group of ``p`` of them, with
their K images each. Every identity of a step is on exactly one rank, the ranks together
hold what one process with ``p * world_size`` would (the same keys, in rank order), and all
ranks run the same number of steps.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np

#: One sample of a batch: (index into the records, augmentation seed).
SampleKey = tuple[int, int]


class PKSampler:
    """Batch sampler yielding lists of ``P * K`` :data:`SampleKey` per step.

    Use it as ``DataLoader(dataset, batch_sampler=sampler)`` and call :meth:`set_epoch`
    before each epoch.
    """

    def __init__(
        self,
        pids: Sequence[int],
        p: int,
        k: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if p < 2 or k < 2:
            raise ValueError(f"PK sampling needs P >= 2 and K >= 2 (a positive and a negative), got P={p}, K={k}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in [0, world_size={world_size}), got {rank}")
        by_pid: dict[int, list[int]] = defaultdict(list)
        for index, pid in enumerate(pids):
            by_pid[int(pid)].append(index)
        if len(by_pid) < p * world_size:
            raise ValueError(
                f"P={p} identities per batch on each of {world_size} rank(s) needs {p * world_size}, but the "
                f"training set has only {len(by_pid)}; lower --batch-p"
            )
        self.ids = sorted(by_pid)
        self._images = [np.asarray(by_pid[pid], dtype=np.int64) for pid in self.ids]
        self.p, self.k, self.seed = p, k, seed
        self.rank, self.world_size = rank, world_size
        self.global_p = p * world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches the next iteration yields."""
        self.epoch = epoch

    def __len__(self) -> int:
        """Steps per epoch (the same on every rank)."""
        return -(-len(self.ids) // self.global_p)

    def id_batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        """Positions (into ``self.ids``) of the ``p * world_size`` ids of every global batch of one epoch."""
        n, size = len(self.ids), self.global_p
        order = rng.permutation(n)
        batches = [order[i : i + size] for i in range(0, n, size)]
        if len(batches[-1]) < size:  # top up with ids not already in the last batch
            short = batches[-1]
            others = np.setdiff1d(np.arange(n), short)
            batches[-1] = np.concatenate([short, rng.choice(others, size - len(short), replace=False)])
        return batches

    def __iter__(self) -> Iterator[list[SampleKey]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        for id_positions in self.id_batches(rng):
            # Draw the images of every id (also other ranks') so each rank's stream is the same.
            keys: list[SampleKey] = []
            for pos in id_positions:
                images = self._images[pos]
                chosen = rng.choice(images, self.k, replace=len(images) < self.k)
                keys.extend((int(i), int(s)) for i, s in zip(chosen, rng.integers(0, 2**31, self.k)))
            mine = self.p * self.k
            yield keys[self.rank * mine : (self.rank + 1) * mine]
