"""Make a freshly built model look trained, fast: BatchNorm statistics and affine parameters
moved off their initial values (mean 0, variance 1, weight 1, bias 0), so that folding
BatchNorm into convolutions gives the non-zero biases real checkpoints have."""

from __future__ import annotations

import torch
from torch import nn


def looks_trained(model: nn.Module, seed: int = 0) -> nn.Module:
    """Seeded, in place; returns ``model`` in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
                module.weight.copy_(0.8 + 0.4 * torch.rand(n, generator=generator))
                module.bias.copy_(0.1 * torch.randn(n, generator=generator))
    return model.eval()
