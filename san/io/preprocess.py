"""The one decode + resize function, torch-free (PIL + NumPy).

Evaluation, calibration and every runtime backend call :func:`load_image`; nothing else
decodes or resizes images for the model.

Policy for awkward files (each failure is an :class:`ImageDecodeError` with a reason):

- only regular files are opened: directories, FIFOs and devices are refused without
  reading (a FIFO named ``x.jpg`` would otherwise block forever);
- the format is sniffed from the content, never taken from the suffix;
- images over Pillow's ``Image.MAX_IMAGE_PIXELS`` (its documented setting, read at call
  time), or whose decoded pixels would exceed :data:`san.contract.limits.MAX_DECODED_IMAGE_BYTES` at
  their bit depth, are refused from the header, before any pixel is decoded; the check is
  explicit rather than a ``warnings`` filter, which is not thread-safe;
- truncated or corrupt pixel data is an error, never grey-filled;
- EXIF orientation is applied; animations give their first frame;
- 16-bit samples are scaled by 255/65535 (a dark 16-bit image stays dark), a band of rows
  at a time in integers (no float copy of the image); transparency is composited over black;
  every mode ends as 8-bit RGB.
"""

from __future__ import annotations

import os
import stat

import numpy as np
from PIL import Image, ImageMode, ImageOps, UnidentifiedImageError

from san.contract.limits import exceeds
from san.contract.spec import InputSpec
from san.io.errors import ToolkitError

_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}
_UNDECODABLE = "cannot decode image"
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
_CONVERSION_PIXELS = 2**18  # 16-bit samples converted per band of rows
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)


class ImageDecodeError(ToolkitError):
    """An image file that cannot be used; ``path`` names the file, ``reason`` says why.

    Picklable (it crosses process boundaries in decode workers); ``str()`` is printable
    even for file names that are not valid UTF-8.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fsdecode(path)
        self.reason = reason
        super().__init__(self.path, reason)

    def __str__(self) -> str:
        return f"{printable_path(self.path)}: {self.reason}"


def printable_path(path: str | os.PathLike[str]) -> str:
    """``path`` for messages: bytes of a non-UTF-8 file name appear as ``\\udcXX`` escapes, so
    printing never fails, whatever the terminal's encoding is."""
    return os.fsdecode(path).encode("utf-8", "backslashreplace").decode("utf-8")


def decode_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open ``path`` as an 8-bit RGB image: EXIF rotation applied, first frame only.

    Raises :class:`ImageDecodeError` for anything that is not a readable image (see the
    module doc for the policy).
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise ImageDecodeError(path, f"cannot open file: {exc.strerror or exc}") from exc
    info = os.fstat(fd)
    kind = stat.S_IFMT(info.st_mode)
    problem = (
        "is a directory, not an image file" if kind == stat.S_IFDIR
        else "not a regular file (FIFO, socket or device); refused without reading" if kind != stat.S_IFREG
        else "empty file (0 bytes)" if info.st_size == 0
        else ""
    )
    if problem:
        os.close(fd)
        raise ImageDecodeError(path, problem)
    with os.fdopen(fd, "rb") as fh:
        try:
            with Image.open(fh) as img:
                _check_pixels(path, img)
                img.seek(0)
                img.load()
                return _to_rgb8(ImageOps.exif_transpose(img))
        except ImageDecodeError:
            raise
        except UnidentifiedImageError as exc:
            raise ImageDecodeError(path, f"{_UNDECODABLE}: not an image (unrecognised or unsupported format)") from exc
        except Image.DecompressionBombError as exc:
            raise ImageDecodeError(path, f"image too large (decompression-bomb guard): {exc}") from exc
        # Pillow's plugins signal malformed data with many exception types (OSError,
        # SyntaxError, ValueError, struct.error, IndexError, EOFError, ...): all mean "corrupt".
        except Exception as exc:  # noqa: BLE001
            reason = f"{_UNDECODABLE}: corrupt or truncated data ({type(exc).__name__}: {exc})"
            raise ImageDecodeError(path, reason) from exc


def decoded_bytes(mode: str, width: int, height: int) -> int:
    """What an image of ``mode`` and this size takes once decoded: pixels x bands x sample bytes."""
    described = ImageMode.getmode(mode)
    return width * height * len(described.bands) * np.dtype(described.typestr.replace("b1", "u1")).itemsize


def _check_pixels(path: str | os.PathLike[str], img: Image.Image) -> None:
    """Refuse images over ``Image.MAX_IMAGE_PIXELS`` or :data:`san.contract.limits.MAX_DECODED_IMAGE_BYTES`
    from the header alone."""
    limit = Image.MAX_IMAGE_PIXELS
    pixels = img.width * img.height
    if limit is not None and pixels > limit:
        raise ImageDecodeError(
            path,
            f"image too large (decompression-bomb guard): {img.width}x{img.height} = {pixels} pixels "
            f"exceeds PIL.Image.MAX_IMAGE_PIXELS = {limit}",
        )
    size = decoded_bytes(img.mode, img.width, img.height)
    if over := exceeds(size, "MAX_DECODED_IMAGE_BYTES"):
        raise ImageDecodeError(path, f"image too large: {img.width}x{img.height} in mode {img.mode} decodes to "
                               f"{size} bytes, {over}")


def _sixteen_bit_to_grey8(img: Image.Image) -> Image.Image:
    """16-bit grey -> 8-bit grey, ``round(x * 255 / 65535)`` (= ``(x + 128) // 257``: 65535 is
    255 x 257, and x / 257 never ends in .5), a band of rows at a time."""
    samples = np.asarray(img)
    grey = np.empty(samples.shape, np.uint8)
    step = max(1, _CONVERSION_PIXELS // max(1, samples.shape[1]))
    for top in range(0, samples.shape[0], step):
        band = np.clip(samples[top : top + step], 0, 65535).astype(np.uint32)
        band += 128
        band //= 257
        grey[top : top + step] = band
    return Image.frombuffer("L", img.size, grey, "raw", "L", 0, 1)  # shares ``grey``: no copy


def _to_rgb8(img: Image.Image) -> Image.Image:
    """Convert any PIL mode (16-bit, palette, RGBA, CMYK, grey, bilevel) to 8-bit RGB."""
    if img.mode in _SIXTEEN_BIT_MODES:
        img = _sixteen_bit_to_grey8(img)
    if "A" in img.getbands() or "transparency" in img.info:
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    return img.convert("RGB")


def resize_to_contract(img: Image.Image, spec: InputSpec) -> np.ndarray:
    """Resize an RGB image to the contract's size: uint8 array of shape 3 x H x W."""
    if img.mode != "RGB":
        raise ValueError(f"resize_to_contract takes an RGB image (from decode_image), got mode {img.mode!r}")
    resized = img.resize((spec.width, spec.height), _RESAMPLE[spec.interpolation])
    return np.ascontiguousarray(np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1))


def load_image(path: str | os.PathLike[str], spec: InputSpec) -> np.ndarray:
    """Decode ``path`` and resize it for the model: uint8, 3 x H x W, RGB."""
    return resize_to_contract(decode_image(path), spec)
