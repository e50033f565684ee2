"""How an exported graph's ``images`` input is encoded, for the consumer that feeds it.

The model's own contract (:class:`san.contract.spec.InputSpec`) is fixed: RGB on the 0..255 scale,
normalised inside the graph. A consumer may feed something else (DeepStream float pixels,
BoxMOT ImageNet-normalised BGR-converted crops, NHWC tensors), so an export can put an
adapter in front of the model: the graph maps its input back to 0..255 RGB NCHW with a
per-channel affine map, a channel reversal and a transpose, then runs the model unchanged.
Every convention therefore computes the same embeddings.

The convention is stored beside the contract (``metadata_props["san.input_convention"]``,
the engine sidecar's provenance); backends read it and :meth:`InputConvention.encode` the
decoded uint8 RGB NCHW batches they are given. Torch-free.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

from san.contract.spec import ContractError, InputSpec

DTYPES = ("uint8", "float32")
CHANNELS = ("RGB", "BGR")
LAYOUTS = ("NCHW", "NHWC")
#: ``--input`` names: uint8 pixels, float pixels on 0..255, float normalised (x / 255 - mean) / std.
KINDS = ("uint8", "float", "normalized")
#: Metadata key of a model's input convention (ONNX ``metadata_props``, an IR's runtime info, an
#: engine sidecar's provenance); absent: uint8 RGB NCHW.
INPUT_CONVENTION_KEY = "san.input_convention"


@dataclass(frozen=True)
class InputConvention:
    """Dtype, value scale, channel order and layout of the ``images`` input.

    ``mean``/``std`` (fractions of 255, in the input's channel order) are set for a
    normalised input, which carries ``(pixel / 255 - mean) / std``; otherwise the input
    carries the pixels themselves (0..255).
    """

    dtype: str = "uint8"
    channels: str = "RGB"
    layout: str = "NCHW"
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        for name in ("mean", "std"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        problems = []
        if self.dtype not in DTYPES:
            problems.append(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.channels not in CHANNELS:
            problems.append(f"channels must be one of {CHANNELS}, got {self.channels!r}")
        if self.layout not in LAYOUTS:
            problems.append(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if (self.mean is None) != (self.std is None):
            problems.append("mean and std go together (a normalised input needs both)")
        if self.mean is not None and self.std is not None:
            if self.dtype != "float32":
                problems.append("a normalised input must be float32")
            if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
                problems.append(f"mean and std need 3 values each, std > 0; got {self.mean} and {self.std}")
        if problems:
            raise ContractError("invalid input convention: " + "; ".join(problems))

    @classmethod
    def named(cls, kind: str, *, mean: tuple[float, float, float] | None = None,
              std: tuple[float, float, float] | None = None, bgr: bool = False, nhwc: bool = False
              ) -> InputConvention:
        """The convention ``--input KIND`` (see :data:`KINDS`) asks for."""
        if kind not in KINDS:
            raise ContractError(f"--input {kind!r}: unknown input convention; choose from {', '.join(KINDS)}")
        if (kind == "normalized") != (mean is not None and std is not None):
            raise ContractError("--input normalized needs --input-mean and --input-std, and only it takes them")
        return cls("uint8" if kind == "uint8" else "float32", "BGR" if bgr else "RGB", "NHWC" if nhwc else "NCHW",
                   mean, std)

    @property
    def normalized(self) -> bool:
        return self.mean is not None

    @property
    def is_default(self) -> bool:
        return self == InputConvention()

    def dims(self, spec: InputSpec) -> list[int]:
        """The input's non-batch dimensions for ``spec``."""
        return [3, spec.height, spec.width] if self.layout == "NCHW" else [spec.height, spec.width, 3]

    def pixel_affine(self) -> tuple[np.ndarray, np.ndarray]:
        """(scale, offset) per input channel with pixel = input * scale + offset (0..255)."""
        if not self.normalized:
            return np.ones(3, np.float32), np.zeros(3, np.float32)
        return (255 * np.asarray(self.std, np.float32), 255 * np.asarray(self.mean, np.float32))

    def encode(self, batch: np.ndarray) -> np.ndarray:
        """Turn decoded uint8 RGB NCHW images into this convention's input."""
        x = batch[:, ::-1] if self.channels == "BGR" else batch
        if self.dtype == "float32":
            x = x.astype(np.float32)
            if self.normalized:
                scale, offset = self.pixel_affine()
                x = (x - offset[:, None, None]) / scale[:, None, None]
        if self.layout == "NHWC":
            x = x.transpose(0, 2, 3, 1)
        return np.ascontiguousarray(x)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> InputConvention:
        try:
            data = json.loads(text)
            return cls(**data)
        except (ValueError, TypeError) as exc:
            raise ContractError(f"invalid input convention {text!r} ({exc})") from exc

    def describe(self) -> str:
        """e.g. ``float32 BGR NHWC, normalised (mean (0.406, ...), std (...))``."""
        scale = (f"normalised (mean {self.mean}, std {self.std})" if self.normalized
                 else "0..255")
        return f"{self.dtype} {self.channels} {self.layout}, {scale}"
