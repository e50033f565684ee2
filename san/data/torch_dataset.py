"""Torch ``Dataset`` over :class:`ImageRecord` s: decode with :mod:`san.io.preprocess`, then
augment (training) or build test-time views (evaluation). Yields uint8 tensors.

An unreadable image does not stop a data loader: its item is all zeros and carries the
reason, and the caller decides (the trainer drops it from the batch, evaluation skips it
and lists it at the end).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from san.contract.spec import InputSpec
from san.data.augment import TrainAugment, eval_views
from san.data.records import ImageRecord
from san.data.sampler import SampleKey
from san.evaluation.embedding import TTA_MODES
from san.io.preprocess import ImageDecodeError, decode_image

#: One item: (image, index into the records, "" or the reason the file could not be used).
Item = tuple[torch.Tensor, int, str]


class ReidImageDataset(Dataset[Item]):
    """Images of ``records`` at the contract's size.

    With ``augment`` (training) items are keyed by :data:`SampleKey` ``(index, seed)`` from
    :class:`~san.data.sampler.PKSampler` and are 3 x H x W; the seed makes the augmentation
    independent of worker scheduling. Without it (evaluation) items are keyed by index and
    are V x 3 x H x W, the views of ``tta`` (see :func:`~san.data.augment.eval_views`).
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        spec: InputSpec,
        augment: TrainAugment | None = None,
        tta: str = "none",
    ) -> None:
        if tta not in TTA_MODES:
            raise ValueError(f"tta must be one of {TTA_MODES}, got {tta!r}")
        self.records = list(records)
        self.spec, self.augment, self.tta = spec, augment, tta
        views = {"none": 1, "flip": 2, "tencrop": 10}[tta]
        hw = (3, spec.height, spec.width)
        self.item_shape = hw if augment is not None else (views, *hw)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int | SampleKey) -> Item:
        index, seed = key if isinstance(key, tuple) else (key, None)
        if self.augment is not None and seed is None:
            raise TypeError("a training dataset is indexed by (index, seed) keys, as PKSampler yields them")
        try:
            img = decode_image(self.records[index].path)
        except ImageDecodeError as exc:
            return torch.zeros(self.item_shape, dtype=torch.uint8), index, exc.reason
        if self.augment is not None:
            array = self.augment(img, self.spec, np.random.default_rng(seed))
        else:
            array = eval_views(img, self.spec, self.tta)
        return torch.from_numpy(array), index, ""
