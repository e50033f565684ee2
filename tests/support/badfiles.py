"""Generator of bad and awkward image files, shared by the hardening tests.

``make_bad_files(root)`` writes one file (or link, or folder) per kind under ``root`` and
returns what :func:`san.io.preprocess.decode_image` must do with each, and whether
:func:`runtime.discovery.discover_images` lists it. Everything is small and built in
well under a second; the decompression bombs are real (over Pillow's actual
``Image.MAX_IMAGE_PIXELS``) but are PNGs of an empty bilevel canvas, a few kB on disk.
"""

from __future__ import annotations

import io
import math
import os
import struct
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from san.contract.limits import MAX_DECODED_IMAGE_BYTES

RED, GREEN, BLUE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (0, 0, 0)
#: Allowed per-channel difference at a probe (JPEG is lossy).
PROBE_TOLERANCE = 24

Probe = tuple[int, int, tuple[int, int, int]]  # x, y, expected RGB in the decoded image


@dataclass(frozen=True)
class BadCase:
    """One generated input and the expected outcome."""

    name: str
    path: str  # relative POSIX path under root (may hold surrogate escapes)
    outcome: str  # "ok": decodes; "error": ImageDecodeError
    reason: str = ""  # substring of ImageDecodeError.reason when outcome is "error"
    listed: bool = True  # listed by runtime.discovery (hidden files and folders are not)
    size: tuple[int, int] | None = None  # decoded (width, height) when outcome is "ok"
    probes: tuple[Probe, ...] = ()
    skip: str = ""  # why this machine cannot check the case as intended ("" if it can)


def _encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def _halves(size: tuple[int, int], left: tuple[int, ...], right: tuple[int, ...], mode: str = "RGB") -> Image.Image:
    """An image whose left half is ``left`` and right half ``right``."""
    img = Image.new(mode, size, left)
    img.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return img


def _noise(size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(width: int, height: int, bit_depth: int, color_type: int, rows: Iterable[bytes]) -> bytes:
    """A PNG written by hand (filter 0 rows), for what Pillow cannot save or would need memory for."""
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(b"\0" + row) for row in rows) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")


def _bomb(pixels_over: int) -> tuple[bytes, int]:
    """An all-black bilevel square PNG with more than ``pixels_over`` pixels, and its side."""
    side = math.isqrt(pixels_over) + 1
    return _png(side, side, 1, 0, (bytes(-(-side // 8)) for _ in range(side))), side


def _exif_rotated(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _encode(_halves((40, 20), RED, BLUE), "JPEG", quality=95, exif=exif.tobytes())


def _animated(fmt: str, **params: object) -> bytes:
    frames = [Image.new("RGB", (16, 16), c) for c in (RED, GREEN, BLUE)]
    return _encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=50, loop=0, **params)


def _palette(transparent: bool) -> bytes:
    img = Image.new("P", (16, 16), 0)
    img.putpalette([*RED, *GREEN, *BLUE] + [0] * (253 * 3))
    img.paste(1, (8, 0, 16, 16))
    return _encode(img, "PNG", **({"transparency": 1} if transparent else {}))


def make_bad_files(root: Path) -> list[BadCase]:
    """Write every kind under ``root`` (created if needed) and return the cases."""
    root.mkdir(parents=True, exist_ok=True)
    cases: list[BadCase] = []
    good_jpeg = _encode(Image.new("RGB", (32, 64), RED), "JPEG", quality=95)
    good_png = _encode(Image.new("RGB", (32, 64), GREEN), "PNG")
    noisy_jpeg = _encode(_noise((64, 64)), "JPEG", quality=90)

    def add(name: str, rel: str, content: bytes | Callable[[Path], None], outcome: str, **expect: object) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            content(path)
        cases.append(BadCase(name, rel, outcome, **expect))  # type: ignore[arg-type]

    red_ok = {"size": (32, 64), "probes": ((16, 32, RED),)}
    green_ok = {"size": (32, 64), "probes": ((16, 32, GREEN),)}
    split = {"size": (16, 16), "probes": ((4, 8, RED), (12, 8, BLACK))}

    # -- not images, or broken ones
    add("zero-byte file", "empty.jpg", b"", "error", reason="empty file (0 bytes)")
    add("truncated JPEG", "truncated.jpg", noisy_jpeg[: len(noisy_jpeg) // 2], "error", reason="truncated")
    add("text file named .jpg", "text.jpg", b"this is not an image\n" * 10, "error", reason="not an image")
    add("JPEG with a corrupt header", "corrupt_header.jpg", noisy_jpeg[:3] + b"\x00" * 300 + noisy_jpeg[303:],
        "error", reason="not an image")
    bad_crc = bytearray(good_png)
    bad_crc[29] ^= 0xFF  # IHDR's CRC
    add("PNG with a bad header CRC", "bad_crc.png", bytes(bad_crc), "error", reason="not an image")
    noisy_png = _encode(_noise((64, 64)), "PNG")
    middle = len(noisy_png) // 2
    add("PNG with corrupt pixel data", "corrupt_pixels.png",
        noisy_png[:middle] + bytes(64) + noisy_png[middle + 64 :], "error",
        reason="cannot decode image: corrupt or truncated data")
    add("AppleDouble resource file (hidden)", "._resource.jpg", b"\x00\x05\x16\x07" + bytes(80), "error",
        reason="not an image", listed=False)
    # -- awkward but valid encodings
    add("16-bit grayscale PNG", "gray16.png",
        _png(8, 8, 16, 0, [struct.pack(">8H", *[32896] * 8)] * 8), "ok",
        size=(8, 8), probes=((3, 3, (128, 128, 128)),))
    add("dark 16-bit grayscale PNG (stays dark)", "gray16_dark.png",
        _png(8, 8, 16, 0, [struct.pack(">8H", *[200] * 8)] * 8), "ok", size=(8, 8), probes=((3, 3, (1, 1, 1)),))
    add("16-bit RGB PNG", "rgb16.png", _png(8, 8, 16, 2, [struct.pack(">24H", *[65535, 0, 32896] * 8)] * 8),
        "ok", size=(8, 8), probes=((3, 3, (255, 0, 128)),))
    add("RGBA PNG (transparent half)", "rgba.png",
        _encode(_halves((16, 16), (*RED, 255), (*GREEN, 0), "RGBA"), "PNG"), "ok", **split)
    add("gray + alpha PNG", "la.png", _encode(_halves((16, 16), (200, 255), (200, 0), "LA"), "PNG"), "ok",
        size=(16, 16), probes=((4, 8, (200, 200, 200)), (12, 8, BLACK)))
    add("palette PNG", "palette.png", _palette(False), "ok", size=(16, 16), probes=((4, 8, RED), (12, 8, GREEN)))
    add("palette PNG with transparency", "palette_transparent.png", _palette(True), "ok", **split)
    add("bilevel (1-bit) PNG", "bilevel.png", _encode(_halves((16, 16), (255,), (0,), "1"), "PNG"), "ok",
        size=(16, 16), probes=((4, 8, (255, 255, 255)), (12, 8, BLACK)))
    add("CMYK JPEG", "cmyk.jpg", _encode(Image.new("CMYK", (32, 64), (0, 255, 255, 0)), "JPEG", quality=95),
        "ok", **red_ok)
    add("grayscale JPEG", "gray.jpg", _encode(Image.new("L", (32, 64), 77), "JPEG", quality=95), "ok",
        size=(32, 64), probes=((16, 32, (77, 77, 77)),))
    add("1x1 image", "one_pixel.png", _encode(Image.new("RGB", (1, 1), BLUE), "PNG"), "ok",
        size=(1, 1), probes=((0, 0, BLUE),))
    add("extreme aspect ratio 2000x1", "sliver.png", _encode(Image.new("RGB", (2000, 1), RED), "PNG"), "ok",
        size=(2000, 1), probes=((1000, 0, RED),))
    add("progressive JPEG", "progressive.jpg",
        _encode(Image.new("RGB", (32, 64), RED), "JPEG", quality=95, progressive=True), "ok", **red_ok)
    add("JPEG with trailing garbage", "trailing.jpg", good_jpeg + b"GARBAGE" * 100, "ok", **red_ok)
    add("PNG content named .jpg", "png_inside.jpg", good_png, "ok", **green_ok)
    add("BMP", "plain.bmp", _encode(Image.new("RGB", (32, 64), RED), "BMP"), "ok", **red_ok)
    add("still WebP", "still.webp", _encode(Image.new("RGB", (32, 64), RED), "WEBP", lossless=True), "ok", **red_ok)
    # -- over the decompression-bomb limit (Pillow's real one)
    limit = Image.MAX_IMAGE_PIXELS or 89_478_485
    bomb, side = _bomb(limit)
    add("image just over the decompression-bomb limit", "bomb.png", bomb, "error",
        reason=f"{side}x{side} = {side * side} pixels exceeds PIL.Image.MAX_IMAGE_PIXELS")
    add("image over twice the decompression-bomb limit", "bomb2x.png", _bomb(2 * limit)[0], "error",
        reason="decompression-bomb guard")
    # -- under Pillow's pixel limit, over the toolkit's decoded-bytes limit at 16 bits per sample
    side16 = math.isqrt(MAX_DECODED_IMAGE_BYTES // 2) + 1
    add("16-bit grayscale PNG whose pixels decode to over the byte limit", "gray16_huge.png",
        _png(side16, side16, 16, 0, (bytes(2 * side16) for _ in range(side16))), "error",
        reason=f"image too large: {side16}x{side16} in mode I;16 decodes to {2 * side16 * side16} bytes")
    # -- orientation and animation
    add("EXIF orientation 6 (rotate 90 CW)", "exif6.jpg", _exif_rotated(6), "ok",
        size=(20, 40), probes=((10, 5, RED), (10, 35, BLUE)))
    add("EXIF orientation 8 (rotate 90 CCW)", "exif8.jpg", _exif_rotated(8), "ok",
        size=(20, 40), probes=((10, 5, BLUE), (10, 35, RED)))
    first_frame = {"size": (16, 16), "probes": ((8, 8, RED),)}
    add("animated GIF (first frame; .gif is not a listed suffix)", "animated.gif", _animated("GIF"), "ok",
        listed=False, **first_frame)
    add("animated WebP (first frame)", "animated.webp", _animated("WEBP", lossless=True), "ok", **first_frame)
    # -- the file system
    add("symbolic-link loop", "loop.jpg", lambda p: os.symlink(p.name, p), "error",
        reason="Too many levels of symbolic links")
    add("dangling symbolic link", "dangling.jpg", lambda p: os.symlink("missing.jpg", p), "error",
        reason="No such file or directory")
    add("link cycle between folders", "cycle/back", lambda p: os.symlink("..", p), "error",
        reason="is a directory", listed=False)
    add("image inside the link cycle (listed once)", "cycle/inside.jpg", good_jpeg, "ok", **red_ok)
    add("directory named x.jpg", "folder.jpg", lambda p: p.mkdir(), "error", reason="is a directory", listed=False)
    add("FIFO named x.jpg (would block a reader)", "fifo.jpg", lambda p: os.mkfifo(p), "error",
        reason="not a regular file")
    add("link to a device (/dev/zero)", "device.jpg", lambda p: os.symlink("/dev/zero", p), "error",
        reason="not a regular file")
    unreadable = root / "unreadable.jpg"
    unreadable.write_bytes(good_jpeg)
    unreadable.chmod(0)
    try:
        unreadable.open("rb").close()
        cases.append(BadCase("unreadable permissions (chmod 000)", "unreadable.jpg", "ok", **red_ok,
                             skip="chmod 000 does not stop reads here (running as root / CAP_DAC_OVERRIDE)"))
    except PermissionError:
        cases.append(BadCase("unreadable permissions (chmod 000)", "unreadable.jpg", "error",
                             reason="Permission denied"))
    add("non-UTF-8 file name", os.fsdecode(b"caf\xe9_\xff.jpg"), good_jpeg, "ok", **red_ok)
    add("upper-case extension .JPG", "upper.JPG", good_jpeg, "ok", **red_ok)
    add("mixed-case extension .Png", "mixed.Png", good_png, "ok", **green_ok)
    add("mixed-case extension .JpEg", "mixed.JpEg", good_jpeg, "ok", **red_ok)
    add("hidden file", ".hidden.jpg", good_jpeg, "ok", listed=False, **red_ok)
    add("file in a hidden folder", ".thumbnails/thumb.jpg", good_jpeg, "ok", listed=False, **red_ok)
    add("image with a non-image suffix", "notes.txt", good_jpeg, "ok", listed=False, **red_ok)
    add("30 levels of nesting", "/".join(f"d{i:02d}" for i in range(30)) + "/deep.png", good_png, "ok", **green_ok)
    add("255-byte file name", "n" * 251 + ".png", good_png, "ok", **green_ok)
    return cases
