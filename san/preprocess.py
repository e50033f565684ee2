"""The one decode + resize function, torch-free (PIL + NumPy).

Evaluation, calibration and every runtime backend call :func:`load_image`; nothing else
decodes or resizes images for the model.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from san.spec import InputSpec

_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


class ImageDecodeError(Exception):
    """An image file that cannot be used; the message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def decode_image(path: str | Path) -> Image.Image:
    """Open ``path`` as an 8-bit RGB image: EXIF rotation applied, first frame only.

    Raises :class:`ImageDecodeError` for anything that is not a readable image,
    including decompression bombs.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.seek(0)
                img.load()
                img = ImageOps.exif_transpose(img)
                return _to_rgb8(img)
    except Image.DecompressionBombWarning as exc:
        raise ImageDecodeError(path, f"image too large (decompression-bomb guard): {exc}") from exc
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(path, f"image too large (decompression-bomb guard): {exc}") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageDecodeError(path, f"cannot decode image: {exc}") from exc


def _to_rgb8(img: Image.Image) -> Image.Image:
    """Convert any PIL mode (16-bit, palette, RGBA, CMYK, grey) to 8-bit RGB."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if arr.max(initial=0) > 255 else 255.0
        img = Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def resize_to_contract(img: Image.Image, spec: InputSpec) -> np.ndarray:
    """Resize an RGB image to the contract's size: uint8 array of shape 3 x H x W."""
    resized = img.resize((spec.width, spec.height), _RESAMPLE[spec.interpolation])
    return np.ascontiguousarray(np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1))


def load_image(path: str | Path, spec: InputSpec) -> np.ndarray:
    """Decode ``path`` and resize it for the model: uint8, 3 x H x W, RGB."""
    return resize_to_contract(decode_image(path), spec)
