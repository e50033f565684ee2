"""`ModelConfig`: everything needed to rebuild a SAN from its checkpoint alone."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from san.contract.limits import LimitError, check_size
from san.contract.spec import InputSpec
from san.io.errors import ToolkitError

BACKBONES = ("resnet18", "resnet34", "resnet50")
#: Mask generators behind one switch: the paper's SAN and its comparison variants.
ATTENTIONS = ("none", "sharp", "soft", "threshold", "power")
#: How a context unit upsamples back to its stage's size: ``sparse`` (1x1 transposed
#: convolution of stride 2, read literally) or ``nearest`` (nearest x2, then the same 1x1 weights).
CU_UPSAMPLES = ("sparse", "nearest")
#: What a checkpoint written before ``cu_upsample`` existed was built with.
LEGACY_CU_UPSAMPLE = "sparse"


class ConfigError(ToolkitError, ValueError):
    """A model configuration that cannot be built."""


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a Sharp Attention Network (paper section III, IV-B).

    ``attention`` selects the mask generator: ``sharp`` (Gumbel-Softmax sampling, the
    paper's SAN), ``soft`` (sigmoid gating), ``threshold`` (1[pi > lambda]), ``power``
    (pi ** p) or ``none`` (the plain ResNet baseline). ``cross_feature`` is the paper's
    CIL, F = (1 + M) * T; without it F = A = M * T. ``cu_upsample`` is the context unit's
    upsampling (:data:`CU_UPSAMPLES`): ``sparse`` leaves 3/4 of every CU mask without image
    content (one shared pi per image and channel there), ``nearest`` gives every position
    some, with the same parameters (Table II holds).
    """

    backbone: str = "resnet50"
    attention: str = "sharp"
    attention_stages: tuple[int, ...] = (1, 2, 3, 4)
    context_unit: bool = True
    cu_upsample: str = "sparse"
    cross_feature: bool = True
    threshold_lambda: float = 0.3
    power: int = 2
    hidden_dim: int = 1024
    spec: InputSpec = field(default_factory=InputSpec)

    def __post_init__(self) -> None:
        object.__setattr__(self, "attention_stages", tuple(sorted(set(self.attention_stages))))
        problems = []
        if self.backbone not in BACKBONES:
            problems.append(f"backbone must be one of {BACKBONES}, got {self.backbone!r}")
        if self.attention not in ATTENTIONS:
            problems.append(f"attention must be one of {ATTENTIONS}, got {self.attention!r}")
        if self.cu_upsample not in CU_UPSAMPLES:
            problems.append(f"cu_upsample must be one of {CU_UPSAMPLES}, got {self.cu_upsample!r}")
        if not set(self.attention_stages) <= {1, 2, 3, 4}:
            problems.append(f"attention_stages must be a subset of 1..4, got {self.attention_stages}")
        if isinstance(self.threshold_lambda, bool) or not isinstance(self.threshold_lambda, (int, float)):
            raise ConfigError(f"invalid model config: threshold_lambda must be a number, got {self.threshold_lambda!r}")
        if self.power not in (2, 3):
            problems.append(f"power must be 2 or 3 (Table III), got {self.power}")
        if not 0.0 < self.threshold_lambda < 1.0:
            problems.append(f"threshold_lambda must lie in (0, 1), got {self.threshold_lambda}")
        try:
            check_size(self.hidden_dim, "MAX_HIDDEN_DIM", "hidden_dim")
        except LimitError as exc:
            problems.append(str(exc))
        if self.spec.deployed_mask != "threshold" and self.attention != "sharp":
            problems.append(f"deployed_mask {self.spec.deployed_mask!r} deploys sampled masks; attention "
                            f"{self.attention!r} has none (only 'sharp' samples)")
        if self.context_stages and (self.spec.height % 32 or self.spec.width % 32):
            problems.append(
                f"input size {self.spec.height}x{self.spec.width} must be divisible by 32 when "
                f"context units are on (stages {self.context_stages}); pick e.g. 256x128, or "
                "set context_unit=False (--no-context-unit)"
            )
        if problems:
            raise ConfigError("invalid model config: " + "; ".join(problems))
        if self.attention == "threshold" and self.spec.mask_threshold != self.threshold_lambda:
            # the contract records what the deployed graph computes: this variant's masks are 1[pi >= lambda]
            object.__setattr__(self, "spec", replace(self.spec, mask_threshold=float(self.threshold_lambda)))

    @property
    def context_stages(self) -> tuple[int, ...]:
        """Stages that get a context unit: attention stages 1-3 when enabled."""
        if self.attention == "none" or not self.context_unit:
            return ()
        return tuple(s for s in self.attention_stages if s <= 3)

    @property
    def active_stages(self) -> tuple[int, ...]:
        """Stages followed by an attention block."""
        return () if self.attention == "none" else self.attention_stages

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for checkpoints and JSON)."""
        d = asdict(self)
        d["attention_stages"] = list(self.attention_stages)
        d["spec"] = self.spec.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error. A dict without
        ``cu_upsample`` (an older checkpoint) rebuilds the model it was trained as: sparse."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown model config keys: {unknown}")
        data = {"cu_upsample": LEGACY_CU_UPSAMPLE, **data}
        if "spec" in data:
            data["spec"] = InputSpec.from_dict(data["spec"])
        if "attention_stages" in data:
            data["attention_stages"] = tuple(data["attention_stages"])
        return cls(**data)

    def with_spec(self, **changes: Any) -> ModelConfig:
        """A copy whose input contract has ``changes`` applied (a new mask threshold is the
        ``threshold`` variant's lambda too)."""
        if self.attention == "threshold" and "mask_threshold" in changes:
            return replace(self, spec=replace(self.spec, **changes), threshold_lambda=changes["mask_threshold"])
        return replace(self, spec=replace(self.spec, **changes))
