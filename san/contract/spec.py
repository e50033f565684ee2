"""The one input contract, torch-free.

`InputSpec` is the single source of truth for what a SAN model takes and gives: it is
saved in every checkpoint, written into the ONNX file's ``metadata_props`` and into the
JSON sidecar of every TensorRT engine. Deployed code only decodes and resizes
(see :mod:`san.io.preprocess`); mean/std normalisation lives inside the model graph.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from san.contract.limits import LimitError, check_size
from san.io.errors import ToolkitError

#: Key under which the contract is stored in ONNX ``metadata_props`` and engine sidecars.
METADATA_KEY = "san.input_spec"

INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "lanczos")
#: How a SAN's sampled masks are deployed: ``threshold`` 1[pi > mask_threshold] (hard), or
#: ``noise-free`` sigmoid(logit(pi) / tau), Eqs. 4-5 with the Gumbel noise at its median 0 and tau
#: the temperature training ended with (continuous).
DEPLOYED_MASKS = ("threshold", "noise-free")
#: Keys a contract written before they existed may lack, with the value it then meant.
_LEGACY_DEFAULTS: dict[str, Any] = {"deployed_mask": "threshold"}


class ContractError(ToolkitError, ValueError):
    """Input or artifact that disagrees with the input contract."""


def _sequence(value: object) -> bool:
    return isinstance(value, (list, tuple))


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class InputSpec:
    """What the model expects and returns.

    Images enter as RGB, NCHW, ``uint8`` in 0..255 (float input is accepted on the same
    0..255 scale), resized to ``height`` x ``width`` with ``interpolation``. The model
    subtracts ``mean`` and divides by ``std`` (both on the 0..1 scale) itself. A SAN's
    sampled masks are deployed as ``deployed_mask`` says (:data:`DEPLOYED_MASKS`).
    """

    height: int = 256
    width: int = 128
    channel_order: str = "RGB"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"
    embedding_dim: int = 128
    mask_threshold: float = 0.5
    l2_normalize: bool = False
    deployed_mask: str = "threshold"

    def __post_init__(self) -> None:
        # Accept lists (from JSON) but store tuples so the spec stays hashable.
        problems = []
        for name, bound in (("height", "MAX_IMAGE_SIDE"), ("width", "MAX_IMAGE_SIDE"), ("embedding_dim", "MAX_EMBEDDING_DIM")):
            try:  # sizes are checked, types first, before anything is allocated for them
                check_size(getattr(self, name), bound, name)
            except LimitError as exc:
                problems.append(str(exc))
        numbers = (*self.mean, *self.std) if _sequence(self.mean) and _sequence(self.std) else ()
        if not numbers or not all(_number(v) and math.isfinite(v) for v in (*numbers, self.mask_threshold)):
            raise ContractError(f"invalid input contract: mean, std and mask_threshold must be finite numbers, got "
                                f"{self.mean!r}, {self.std!r}, {self.mask_threshold!r}")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if not isinstance(self.l2_normalize, bool):
            problems.append(f"l2_normalize must be true or false, got {self.l2_normalize!r}")
        if self.channel_order != "RGB":
            problems.append(f"channel_order must be 'RGB', got {self.channel_order!r}")
        if len(self.mean) != 3 or len(self.std) != 3:
            problems.append("mean and std need exactly 3 values (R, G, B)")
        if any(s <= 0 for s in self.std):
            problems.append(f"std values must be positive, got {self.std}")
        if self.interpolation not in INTERPOLATIONS:
            problems.append(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if not 0.0 <= self.mask_threshold <= 1.0:
            problems.append(f"mask_threshold must lie in [0, 1], got {self.mask_threshold}")
        if self.deployed_mask not in DEPLOYED_MASKS:
            problems.append(f"deployed_mask must be one of {DEPLOYED_MASKS}, got {self.deployed_mask!r}")
        if problems:
            raise ContractError("invalid input contract: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict."""
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    def to_json(self) -> str:
        """Canonical JSON (sorted keys), as stored in artifacts."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSpec:
        """Rebuild from :meth:`to_dict` output; unknown or missing keys are an error (but for
        keys newer than the file, which take the value the file meant)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        data = {**_LEGACY_DEFAULTS, **data}
        missing = sorted(known - set(data))
        if unknown or missing:
            raise ContractError(f"input contract keys do not match: unknown {unknown}, missing {missing}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> InputSpec:
        """Parse the JSON written by :meth:`to_json`."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ContractError(f"input contract is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ContractError("input contract JSON must be an object")
        return cls.from_dict(data)

    def check_batch_shape(self, shape: tuple[int, ...]) -> None:
        """Raise :class:`ContractError` unless ``shape`` is N x 3 x height x width."""
        expected = (3, self.height, self.width)
        if len(shape) != 4 or tuple(shape[1:]) != expected:
            raise ContractError(
                f"input batch has shape {tuple(shape)}; the contract expects "
                f"N x {expected[0]} x {expected[1]} x {expected[2]} (RGB, NCHW)"
            )
