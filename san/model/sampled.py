"""A SAN whose sampled masks stay sampled in eval mode (the model as it was trained), or are
the noise-free relaxed masks: references for the deterministic masks it deploys."""

from __future__ import annotations

from torch import Tensor, nn

from san.contract.spec import InputSpec
from san.model.network import SAN


class MaskReference(nn.Module):
    """``model`` with other eval-mode masks than the thresholded ones it deploys."""

    def __init__(self, model: SAN) -> None:
        super().__init__()
        self.san = model

    @property
    def spec(self) -> InputSpec:
        """The wrapped model's input contract."""
        return self.san.spec

    def forward(self, images: Tensor) -> Tensor:
        return self.san(images)


class StochasticMasks(MaskReference):
    """``model`` whose sampled mask generators stay in training mode in eval mode.

    ``train(mode)`` (and so ``eval()``) sets every module as asked, then puts the generators
    that sample (:attr:`san.model.attention.MaskGenerator.sampled`) back into training mode:
    BatchNorm keeps its running statistics while the masks are drawn as in training.
    """

    def __init__(self, model: SAN) -> None:
        super().__init__(model)
        self.train(False)

    def train(self, mode: bool = True) -> StochasticMasks:
        super().train(mode)
        for generator in self.san.sampled_generators().values():
            generator.train(True)
        return self


class NoiseFreeMasks(MaskReference):
    """``model`` deploying its sampled masks as sigmoid(logit(pi) / tau), at the temperature
    training ended with (:func:`san.model.attention.noise_free_mask`), instead of
    1[pi > threshold]: ``model.set_deployed_mask("noise-free")``, its contract included."""

    def __init__(self, model: SAN) -> None:
        super().__init__(model)
        model.set_deployed_mask("noise-free")
        self.train(False)
