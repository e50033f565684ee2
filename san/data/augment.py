"""Image transforms on decoded PIL images: training augmentation and test-time views.

Both end in :func:`san.io.preprocess.resize_to_contract`, the one resize function, and give
uint8 RGB arrays; mean/std normalisation stays inside the model. As in torchvision's
transforms v2, random parameters are drawn (:meth:`TrainAugment.draw`) separately from
being applied (:meth:`TrainAugment.apply`), so tests can fix them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from san.contract.spec import InputSpec
from san.evaluation.embedding import TTA_MODES, flip_views, mirrored
from san.io.preprocess import resize_to_contract

#: 10-crop testing first resizes to this multiple of the contract size (256x128 -> 288x144).
TENCROP_ENLARGE = 1.125


@dataclass(frozen=True)
class CropBox:
    """A crop rectangle in pixels of the decoded image."""

    top: int
    left: int
    height: int
    width: int


@dataclass(frozen=True)
class AugmentParams:
    """One draw of the training augmentation."""

    box: CropBox
    flip: bool


@dataclass(frozen=True)
class TrainAugment:
    """Paper IV-B: random crop of area ``scale`` and aspect h/w ``aspect``, resize, flip."""

    scale: tuple[float, float] = (0.64, 1.0)
    aspect: tuple[float, float] = (2.0, 3.0)
    flip_p: float = 0.5
    attempts: int = 10

    def draw(self, width: int, height: int, rng: np.random.Generator) -> AugmentParams:
        """Draw a crop for a ``width`` x ``height`` image and whether to flip.

        Area fraction and aspect are uniform in their ranges; a draw that does not fit is
        retried (torchvision's RandomResizedCrop rule), then the largest centred crop with
        the aspect clamped to the range is used.
        """
        area = width * height
        for _ in range(self.attempts):
            target = area * rng.uniform(*self.scale)
            ratio = rng.uniform(*self.aspect)  # h / w
            h, w = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
            if 0 < h <= height and 0 < w <= width:
                top = int(rng.integers(0, height - h + 1))
                left = int(rng.integers(0, width - w + 1))
                return AugmentParams(CropBox(top, left, h, w), bool(rng.random() < self.flip_p))
        ratio = min(max(height / width, self.aspect[0]), self.aspect[1])
        h, w = (height, max(1, round(height / ratio))) if height / width <= ratio else (round(width * ratio), width)
        box = CropBox((height - h) // 2, (width - w) // 2, h, w)
        return AugmentParams(box, bool(rng.random() < self.flip_p))

    def apply(self, img: Image.Image, params: AugmentParams, spec: InputSpec) -> np.ndarray:
        """Crop, resize to the contract, maybe flip: uint8 array 3 x H x W."""
        b = params.box
        chw = resize_to_contract(img.crop((b.left, b.top, b.left + b.width, b.top + b.height)), spec)
        return np.ascontiguousarray(mirrored(chw)) if params.flip else chw

    def __call__(self, img: Image.Image, spec: InputSpec, rng: np.random.Generator) -> np.ndarray:
        return self.apply(img, self.draw(img.width, img.height, rng), spec)


def eval_views(img: Image.Image, spec: InputSpec, tta: str = "none") -> np.ndarray:
    """Test-time views, uint8 V x 3 x H x W; their embeddings are averaged.

    ``none``: the image (V=1). ``flip``: image and mirror (V=2). ``tencrop``: the standard
    10-crop (Krizhevsky et al., paper IV-B): resize to ``TENCROP_ENLARGE`` x the contract
    size, take the four corner and the centre H x W crops, and their mirrors (V=10).
    """
    if tta not in TTA_MODES:
        raise ValueError(f"tta must be one of {TTA_MODES}, got {tta!r}")
    if tta != "tencrop":
        chw = resize_to_contract(img, spec)
        return flip_views(chw[None])[0] if tta == "flip" else chw[None]
    h, w = spec.height, spec.width
    big_h, big_w = round(h * TENCROP_ENLARGE), round(w * TENCROP_ENLARGE)
    big = resize_to_contract(img, replace(spec, height=big_h, width=big_w))
    corners = [(0, 0), (0, big_w - w), (big_h - h, 0), (big_h - h, big_w - w), ((big_h - h) // 2, (big_w - w) // 2)]
    crops = [big[:, top : top + h, left : left + w] for top, left in corners]
    return np.ascontiguousarray(np.stack(crops + [mirrored(c) for c in crops]))
