"""A SAN whose sampled masks stay sampled in eval mode: the model as it was trained, for
reference measurements against the deterministic masks it deploys."""

from __future__ import annotations

from torch import Tensor, nn

from san.model.network import SAN
from san.spec import InputSpec


class StochasticMasks(nn.Module):
    """``model`` whose sampled mask generators stay in training mode in eval mode.

    ``train(mode)`` (and so ``eval()``) sets every module as asked, then puts the generators
    that sample (:attr:`san.model.attention.MaskGenerator.sampled`) back into training mode:
    BatchNorm keeps its running statistics while the masks are drawn as in training.
    """

    def __init__(self, model: SAN) -> None:
        super().__init__()
        self.san = model
        self.train(False)

    @property
    def spec(self) -> InputSpec:
        """The wrapped model's input contract."""
        return self.san.spec

    def train(self, mode: bool = True) -> StochasticMasks:
        super().train(mode)
        for generator in self.san.sampled_generators().values():
            generator.train(True)
        return self

    def forward(self, images: Tensor) -> Tensor:
        return self.san(images)
