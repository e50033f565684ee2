"""Sharp attention blocks (paper section III): mask generators, Eqs. 1-7."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from san.model.config import ModelConfig
    from san.model.context import ContextUnit

#: The smallest normal float16, 2**-14: the guard of the L2 normalisation, which must hold in
#: half precision too.
FP16_TINY = 2.0**-14
#: Guard of Eq. 3 (max = min): a range below it gives pi < 1, so a channel whose values differ
#: by rounding alone is masked off rather than spread over [0, 1]. In float16 it is the subnormal
#: 2**-20, which IEEE half precision keeps; a larger guard would move pi for real ranges below it.
_RANGE_EPS = 1e-6
#: Guard of log(pi) in Eq. 5 (training only).
_PROB_EPS = 1e-6


def minmax_normalize(x: Tensor) -> Tensor:
    """Eq. 3: per-sample, per-channel min-max normalisation over (H, W) onto [0, 1].

    A constant channel (max = min) gives 0, never NaN. The extremes are taken over the two
    axes in place, not over a flattened view: the export is then ReduceMin/ReduceMax over
    axes (2, 3) with no Reshape around them, which runtimes with blocked memory layouts
    (OpenVINO's CPU plugin) compute without converting every block's tensor to a plain
    layout and back (``benchmarks/openvino_profile.py``).
    """
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(_RANGE_EPS)


def gumbel_softmax_bernoulli(pi: Tensor, tau: Tensor | float) -> Tensor:
    """Eqs. 4-5: relaxed Bernoulli(pi) sample by Gumbel-Softmax at temperature ``tau``.

    M = exp((log pi1 + g1)/tau) / sum_j exp((log pij + gj)/tau) with g0, g1 ~ Gumbel(0, 1);
    the two-class softmax is the sigmoid of the logit difference,
    M = sigmoid((log pi1 - log pi0 + g1 - g0) / tau), pi0 = 1 - pi1.

    Only g1 - g0 enters, and the difference of two independent Gumbel(0, 1) variables is
    exactly Logistic(0, 1) (its CDF is 1 / (1 + e^-x)), whose inverse CDF is
    logit(u) = log u - log(1 - u) for u ~ Uniform(0, 1). So one uniform draw per element
    replaces two, with the same distribution of M (and no gradient through the noise, as
    before); log pi1 - log pi0 is logit(pi1), with pi1 clipped to [eps, 1 - eps].
    """
    noise = torch.rand_like(pi).logit_(1e-20)  # Logistic(0, 1) = g1 - g0
    return torch.sigmoid((torch.logit(pi, _PROB_EPS) + noise) / tau)


def noise_free_mask(pi: Tensor, tau: Tensor | float) -> Tensor:
    """Eqs. 4-5 without the noise (g1 = g0): sigmoid(logit(pi) / tau), the relaxed mask's
    median at temperature ``tau``; a deterministic alternative to 1[pi > 0.5], which it
    approaches as tau goes to 0."""
    return torch.sigmoid(torch.logit(pi, _PROB_EPS) / tau)


def total_variation(a: Tensor) -> Tensor:
    """Eq. 6 per sample: sum_c ||D1 A_c||^2 + ||A_c D2||^2 (squared anisotropic TV).

    Returns a tensor of shape N. Its gradient is Eq. 7, 2 (D1^T D1 A_c + A_c D2 D2^T).
    """
    dh = a[:, :, :-1, :] - a[:, :, 1:, :]  # D1 A_c: differences between rows
    dw = a[:, :, :, :-1] - a[:, :, :, 1:]  # A_c D2: differences between columns
    return dh.pow(2).flatten(1).sum(1) + dw.pow(2).flatten(1).sum(1)


class MaskGenerator(nn.Module):
    """Turns the generator input X into a mask M of the same shape.

    A generator says what its masks are: ``sampled`` (random in training mode, so a model
    has a sampled-mask reference besides its deployed one) and ``hard_threshold`` (the
    eval-mode mask is 0/1 by a comparison of pi with it, or continuous). Nothing else in
    the toolkit decides this from the variant's name.
    """

    #: Training-mode masks are random draws.
    sampled: ClassVar[bool] = False

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> MaskGenerator:
        """The generator of this variant for ``cfg``."""
        return cls()

    def set_temperature(self, tau: float) -> None:
        """Set the sampling temperature; generators that do not sample ignore it."""

    def set_contract_threshold(self, threshold: float) -> None:
        """Follow the input contract's mask threshold; generators with their own ignore it."""

    def set_deployed_mask(self, kind: str) -> None:
        """Follow the input contract's ``deployed_mask``; generators that do not sample ignore it."""

    @property
    def temperature(self) -> float | None:
        """The sampling temperature, None for generators that do not sample."""
        return None

    @property
    def hard_threshold(self) -> float | None:
        """The threshold on pi of the eval-mode mask when it is hard (0 or 1); None when continuous."""
        return None

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return (M, pi), pi being the normalised input where the variant has one."""
        raise NotImplementedError


class SharpMask(MaskGenerator):
    """The paper's generator: Gumbel-Softmax sampling in training; in eval 1[pi > threshold], or
    :func:`noise_free_mask` at the trained temperature when ``noise_free``."""

    sampled = True
    tau: Tensor  # the Gumbel-Softmax temperature (a buffer: saved with the weights)

    def __init__(self, threshold: float = 0.5, tau: float = 1.0, noise_free: bool = False) -> None:
        super().__init__()
        self.threshold = threshold
        self.noise_free = noise_free
        self.register_buffer("tau", torch.tensor(float(tau)))

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> SharpMask:
        return cls(threshold=cfg.spec.mask_threshold, noise_free=cfg.spec.deployed_mask == "noise-free")

    def set_temperature(self, tau: float) -> None:
        self.tau.fill_(tau)

    @property
    def temperature(self) -> float:
        return float(self.tau)

    def set_contract_threshold(self, threshold: float) -> None:
        self.threshold = threshold

    def set_deployed_mask(self, kind: str) -> None:
        self.noise_free = kind == "noise-free"

    @property
    def hard_threshold(self) -> float | None:
        return None if self.noise_free else self.threshold

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        pi = minmax_normalize(x)
        if self.training:
            return gumbel_softmax_bernoulli(pi, self.tau), pi
        if self.noise_free:
            return noise_free_mask(pi, self.tau), pi
        # Noiseless arg-max of Eq. 4 (threshold 0.5 by default, set by the contract).
        return (pi > self.threshold).to(x.dtype), pi


class SoftMask(MaskGenerator):
    """Gating-based soft attention: M = sigmoid(X)."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        m = torch.sigmoid(x)
        return m, m


class ThresholdMask(MaskGenerator):
    """Table III 'thresholding': features whose pi is below lambda are zeroed."""

    def __init__(self, lam: float) -> None:
        super().__init__()
        self.lam = lam

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> ThresholdMask:
        return cls(cfg.spec.mask_threshold)  # lambda: the config keeps the contract's threshold equal to it

    def set_contract_threshold(self, threshold: float) -> None:
        self.lam = threshold

    @property
    def hard_threshold(self) -> float:
        return self.lam

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        pi = minmax_normalize(x)
        return (pi >= self.lam).to(x.dtype), pi


class PowerMask(MaskGenerator):
    """Table III 'power': M = pi ** p (p = 2 or 3)."""

    def __init__(self, p: int) -> None:
        super().__init__()
        self.p = p

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> PowerMask:
        return cls(cfg.power)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        pi = minmax_normalize(x)
        return pi.pow(self.p), pi


#: ``ModelConfig.attention`` -> its generator class (``none`` has no attention block).
GENERATORS: dict[str, type[MaskGenerator]] = {
    "sharp": SharpMask,
    "soft": SoftMask,
    "threshold": ThresholdMask,
    "power": PowerMask,
}


class AttentionBlock(nn.Module):
    """Sharp attention block after one residual stage.

    T = stage output, X = T or CU(T), (M, pi) = generator(X), A = M * T (Eq. 1),
    F = (1 + M) * T (Eq. 2, cross-feature interaction) or F = A without it.

    ``gain`` (alpha, 1 outside a mask warm-up) scales how much the mask acts:
    F = (1 + alpha M) * T with CIL, F = T + alpha (A - T) without; alpha = 1 is the paper's.
    """

    generator: MaskGenerator
    context: ContextUnit | None
    gain: float

    def __init__(self, generator: MaskGenerator, context: ContextUnit | None, cross_feature: bool) -> None:
        super().__init__()
        self.generator = generator
        self.context = context
        self.cross_feature = cross_feature
        self.gain = 1.0

    def forward(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Return (F, A, M, pi)."""
        x = t if self.context is None else self.context(t)
        m, pi = self.generator(x)
        a = m * t
        if self.gain != 1.0:  # mask warm-up (training only)
            return (t + self.gain * a if self.cross_feature else t + self.gain * (a - t)), a, m, pi
        f = t + a if self.cross_feature else a
        return f, a, m, pi
