"""Pictures to look at rather than read: ranked lists and attention-mask overlays (PIL only).

Ranked list (:func:`ranked_list_png`): the query, then its top k, each framed green (same
person id), red (another id) or grey (id unknown), with rank and distance underneath.
Layout, so callers can predict the size: every image is shown as a ``tile_height`` x
``tile_width`` tile inside a ``BORDER`` frame with a ``CAPTION`` strip below; cells are
``PAD`` apart, with a ``GAP`` after the query::

    width  = PAD + cell_w + GAP + k * (cell_w + PAD),  cell_w = tile_width + 2 * BORDER
    height = 2 * PAD + tile_height + 2 * BORDER + CAPTION

Attention overlays (:func:`attention_overlay_pngs`, as in the paper's Fig. 6): one PNG per
image, the image followed by one tile per attention block. A tile shows where block i's
deterministic mask M is on: the fraction of channels switched on at each position,
stretched to the block's own min..max, upsampled and blended over the image; tiles are
enlarged by a whole factor to at least ``MIN_TILE_HEIGHT`` pixels. It needs the torch
model, imported inside that function only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from san.data.market import DUKEMTMCREID, MARKET1501
from san.preprocess import decode_image, load_image

BORDER, CAPTION, PAD, GAP = 4, 14, 6, 18
MIN_TILE_HEIGHT = 128
COLOURS = {True: (30, 170, 60), False: (210, 40, 40), None: (150, 150, 150)}
QUERY_COLOUR = (40, 90, 200)
BACKGROUND = (255, 255, 255)
_ID_PATTERNS: tuple[re.Pattern[str], ...] = (MARKET1501.pattern, DUKEMTMCREID.pattern)


@dataclass(frozen=True)
class Tile:
    """One image of a ranked list: where it is, its person id (None: unknown) and a caption."""

    path: str | Path
    pid: int | None
    caption: str


def person_id(path: str | Path) -> int | None:
    """Person id from a Market-1501 or DukeMTMC-reID file name (``0002_c1s1_000451_03.jpg``); else None."""
    name = Path(path).name
    for pattern in _ID_PATTERNS:
        match = pattern.fullmatch(name)
        if match:
            return int(match[1])
    return None


def ranked_list_size(k: int, tile_height: int, tile_width: int) -> tuple[int, int]:
    """(width, height) of a ranked-list picture with ``k`` results (the module doc's formula)."""
    cell_w = tile_width + 2 * BORDER
    return PAD + cell_w + GAP + k * (cell_w + PAD), 2 * PAD + tile_height + 2 * BORDER + CAPTION


def _tile(path: str | Path, size: tuple[int, int]) -> Image.Image:
    return decode_image(path).resize(size, Image.Resampling.BILINEAR)


def _cell(canvas: Image.Image, x: int, image: Image.Image, colour: tuple[int, int, int], caption: str) -> None:
    draw = ImageDraw.Draw(canvas)
    w, h = image.size
    draw.rectangle((x, PAD, x + w + 2 * BORDER - 1, PAD + h + 2 * BORDER - 1), fill=colour)
    canvas.paste(image, (x + BORDER, PAD + BORDER))
    draw.text((x + 1, PAD + h + 2 * BORDER + 1), caption, fill=(0, 0, 0))


def ranked_list_png(query: Tile, results: Sequence[Tile], out: str | Path, tile_height: int = 128,
                    tile_width: int = 64) -> Path:
    """Draw ``query`` and its ranked ``results`` into ``out`` (PNG); a result's frame is green
    when its id equals the query's, red when it differs, grey when either is unknown."""
    width, height = ranked_list_size(len(results), tile_height, tile_width)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    size = (tile_width, tile_height)
    _cell(canvas, PAD, _tile(query.path, size), QUERY_COLOUR, query.caption)
    cell_w = tile_width + 2 * BORDER
    for rank, tile in enumerate(results):
        same = None if query.pid is None or tile.pid is None else query.pid == tile.pid
        _cell(canvas, PAD + cell_w + GAP + rank * (cell_w + PAD), _tile(tile.path, size), COLOURS[same], tile.caption)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out, format="PNG")
    return out


def heat_colours(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] (H x W) to a blue-cyan-yellow-red ramp: uint8 H x W x 3."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    stops = np.array([[0, 0, 160], [0, 200, 255], [255, 230, 0], [230, 0, 0]], np.float64)
    position = v * (len(stops) - 1)
    low = np.minimum(position.astype(int), len(stops) - 2)
    frac = position - low
    return (stops[low[..., 0]] * (1 - frac) + stops[low[..., 0] + 1] * frac).astype(np.uint8)


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.55) -> Image.Image:
    """Blend a block's mask (h x w, any range) over ``image`` (uint8 3 x H x W), stretched to its min..max."""
    lo, hi = float(mask.min()), float(mask.max())
    stretched = (mask - lo) / (hi - lo) if hi > lo else np.zeros_like(mask)
    height, width = image.shape[1:]
    heat = Image.fromarray((stretched * 255).astype(np.uint8)).resize((width, height), Image.Resampling.BILINEAR)
    colours = heat_colours(np.asarray(heat, np.float64) / 255.0)
    blended = (1 - alpha) * image.transpose(1, 2, 0) + alpha * colours
    return Image.fromarray(blended.round().astype(np.uint8))


def attention_overlay_pngs(ckpt: str | Path, images: Sequence[str | Path], out_dir: str | Path,
                           device: str = "cpu") -> list[Path]:
    """One PNG per image in ``out_dir``: the image, then the mask of each attention block (eval mode).

    Files are named ``<image stem>_masks.png`` (``_2``, ``_3``... when stems repeat).
    """
    import torch

    from san.checkpoint import load_checkpoint

    model, meta = load_checkpoint(ckpt, map_location=device)
    stages = model.cfg.active_stages
    if not stages:
        raise ValueError(f"{ckpt}: the model has no attention blocks (attention={model.cfg.attention!r})")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    model.eval()
    for path in images:
        image = load_image(path, meta.spec)
        with torch.inference_mode():
            masks = model(torch.from_numpy(image[None]).to(device), details=True).masks
        tiles = [Image.fromarray(image.transpose(1, 2, 0))]
        tiles += [overlay(image, m[0].float().mean(0).cpu().numpy()) for m in masks]  # C x h x w -> h x w
        labels = ["image", *(f"block {s}" for s in stages)]
        written.append(_save_strip(tiles, labels, _unique(out_dir / f"{Path(path).stem}_masks.png", written)))
    return written


def mask_strip_size(blocks: int, height: int, width: int) -> tuple[int, int]:
    """(width, height) of an overlay picture for a ``height`` x ``width`` contract and ``blocks`` blocks."""
    factor = -(-MIN_TILE_HEIGHT // height)
    return PAD + (blocks + 1) * (width * factor + PAD), 2 * PAD + height * factor + CAPTION


def _save_strip(tiles: Sequence[Image.Image], labels: Sequence[str], out: Path) -> Path:
    canvas = Image.new("RGB", mask_strip_size(len(tiles) - 1, tiles[0].height, tiles[0].width), BACKGROUND)
    factor = -(-MIN_TILE_HEIGHT // tiles[0].height)
    draw = ImageDraw.Draw(canvas)
    for i, (tile, label) in enumerate(zip(tiles, labels)):
        tile = tile.resize((tile.width * factor, tile.height * factor), Image.Resampling.NEAREST)
        x = PAD + i * (tile.width + PAD)
        canvas.paste(tile, (x, PAD))
        draw.text((x + 1, PAD + tile.height + 1), label, fill=(0, 0, 0))
    canvas.save(out, format="PNG")
    return out


def _unique(path: Path, taken: Sequence[Path]) -> Path:
    candidate, n = path, 1
    while candidate in taken:
        n += 1
        candidate = path.with_name(f"{path.stem}_{n}{path.suffix}")
    return candidate
