"""16-bit images become 8-bit as ``round(x * 255 / 65535)`` for every sample value, without a
float copy of the image: the conversion's memory stays near the 8-bit result's size."""

from __future__ import annotations

import tracemalloc

import numpy as np
from PIL import Image

from san.io.preprocess import _to_rgb8, decoded_bytes


def test_every_16_bit_value_maps_to_its_rounded_8_bit_value() -> None:
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    expected = np.rint(values.astype(np.float64) * 255.0 / 65535.0).astype(np.uint8)  # the textbook formula
    for mode in ("I;16", "I"):
        img = Image.fromarray(values) if mode == "I;16" else Image.fromarray(values.astype(np.int32))
        rgb = np.asarray(_to_rgb8(img))
        assert img.mode == mode and rgb.shape == (256, 256, 3)
        assert (rgb == expected[..., None]).all()
    below_and_above = Image.fromarray(np.array([[-5, 70000]], np.int32))  # mode I holds any int32
    assert np.asarray(_to_rgb8(below_and_above))[0, :, 0].tolist() == [0, 255]


def test_converting_a_16_bit_image_allocates_about_its_8_bit_size() -> None:
    side = 2048
    img = Image.fromarray(np.full((side, side), 40000, np.uint16))
    tracemalloc.start()
    try:
        rgb = _to_rgb8(img)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.asarray(rgb)[0, 0].tolist() == [156, 156, 156]
    # the RGB result (3 B/pixel) and, before it, the 16-bit samples (2 B/pixel) with the 8-bit grey
    # and one band of rows; a float64 conversion takes 8 B/pixel per copy
    assert peak < 5 * side * side, peak


def test_decoded_size_counts_bands_and_sample_bytes() -> None:
    assert [decoded_bytes(mode, 4, 2) for mode in ("1", "L", "P", "I;16", "I;16B", "RGB", "RGBA", "I", "F")] == \
        [8, 8, 8, 16, 16, 24, 32, 32, 32]
