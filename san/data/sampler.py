"""PK batch sampling (Hermans et al.): P identities x K images per batch.

An epoch visits every identity once: the ids are shuffled and cut into groups of P; the
last group is topped up with other ids so every batch has exactly P distinct ids. Each id
contributes K images, drawn without replacement when it has at least K, with replacement
otherwise. All randomness comes from ``(seed, epoch)``, so an epoch is reproducible on its
own (exact resume needs no RNG state), and every sample also carries its own augmentation
seed so the images do not depend on the number of data-loader workers.

Under DistributedDataParallel each rank takes every ``world_size``-th batch; the batch list
is padded with extra random batches so that all ranks run the same number of steps.
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
        if len(by_pid) < p:
            raise ValueError(
                f"P={p} identities per batch but the training set has only {len(by_pid)}; lower --batch-p"
            )
        self.ids = sorted(by_pid)
        self._images = [np.asarray(by_pid[pid], dtype=np.int64) for pid in self.ids]
        self.p, self.k, self.seed = p, k, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches the next iteration yields."""
        self.epoch = epoch

    @property
    def num_global_batches(self) -> int:
        """Batches per epoch over all ranks (a multiple of ``world_size``)."""
        per_epoch = -(-len(self.ids) // self.p)
        return -(-per_epoch // self.world_size) * self.world_size

    def __len__(self) -> int:
        return self.num_global_batches // self.world_size

    def id_batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        """Positions (into ``self.ids``) of the P ids of every global batch of one epoch."""
        n = len(self.ids)
        order = rng.permutation(n)
        batches = [order[i : i + self.p] for i in range(0, n, self.p)]
        if len(batches[-1]) < self.p:  # top up with ids not already in the last batch
            short = batches[-1]
            others = np.setdiff1d(np.arange(n), short)
            batches[-1] = np.concatenate([short, rng.choice(others, self.p - len(short), replace=False)])
        while len(batches) < self.num_global_batches:  # DDP padding: equal steps on every rank
            batches.append(rng.choice(n, self.p, replace=False))
        return batches

    def __iter__(self) -> Iterator[list[SampleKey]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        batches = self.id_batches(rng)
        for number, id_positions in enumerate(batches):
            # Draw every batch (also other ranks') so each rank's stream is the same.
            keys: list[SampleKey] = []
            for pos in id_positions:
                images = self._images[pos]
                chosen = rng.choice(images, self.k, replace=len(images) < self.k)
                keys.extend((int(i), int(s)) for i, s in zip(chosen, rng.integers(0, 2**31, self.k)))
            if number % self.world_size == self.rank:
                yield keys
