"""BatchNorm re-estimation under the deployed masks.

SAN's BatchNorm statistics are collected in training, under sampled masks (Gumbel-Softmax);
deployment feeds the hard masks 1[pi > threshold], whose mean differs, so every layer after
the first attention block normalises with statistics of another input distribution.
:func:`reestimate_batchnorm` recomputes every running mean and variance with the masks that
deployment uses, from unlabelled training images, without gradient: weights, the masks'
threshold and the contract are untouched. The running statistics are the plain average over
all batches (momentum None), as ``torch.optim.swa_utils.update_bn`` computes them; that helper
is not used because it puts the whole model in training mode, which would sample the masks.

It is a measurement (``benchmarks/ablation.py``'s deployed-mask comparison), not a command:
at the ``cpu-demo`` budget it recovers none of the gap between sampled and deployed masks
(docs/ablation.md, "What the deterministic masks cost").
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from san.io.preprocess import load_image
from san.model.network import SAN

#: Images per forward pass of the re-estimation.
BATCH = 64


@torch.no_grad()
def reestimate_batchnorm(model: SAN, images: Sequence[str | Path], batch_size: int = BATCH) -> int:
    """Replace every BatchNorm's running statistics by their average over ``images`` (decoded by
    the model's contract) with deterministic masks; return the number of images. ``model`` ends
    in eval mode; nothing but the running statistics (and the batch counters) changes."""
    if not images:
        raise ValueError("BatchNorm re-estimation needs at least one image")
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    device = next(model.parameters()).device
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over all batches
        norm.train()  # normalise with the batch, accumulate its statistics; the masks stay deterministic
    try:
        for start in range(0, len(images), batch_size):
            batch = np.stack([load_image(path, model.spec) for path in images[start : start + batch_size]])
            model(torch.from_numpy(batch).to(device))
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        model.eval()
    return len(images)
