"""Pictures to look at rather than read: ranked lists and attention-mask overlays (PIL only).

Ranked list (:func:`ranked_list_png`): a legend, then the query and its top k, each framed
blue (the query), green (same person id), red (another id) or grey (id unknown), with its
rank, person id and distance underneath in a :data:`FONT_SIZE` pixel font. Layout, so callers
can predict the size: every image is shown as a ``tile_height`` x ``tile_width`` tile inside
a ``BORDER`` frame with ``CAPTION_LINES`` lines below; cells are ``PAD`` apart, with a ``GAP``
after the query, under a ``LEGEND`` row::

    width  = max(PAD + cell_w + GAP + k * (cell_w + PAD), legend width),  cell_w = tile_width + 2 * BORDER
    height = LEGEND + 2 * PAD + tile_height + 2 * BORDER + CAPTION_LINES * LINE

Attention overlays (:func:`attention_overlay_pngs`, as in the paper's Fig. 6): one PNG per
image: a title, the image followed by one tile per attention block, each labelled with its
block and the range of its mask, and a colour bar. A tile shows where block i's deterministic
mask M is on: the share of channels switched on at each position, stretched to the block's
own min..max, upsampled and blended over the image; tiles are enlarged by a whole factor to
at least ``MIN_TILE_HEIGHT`` pixels, never below the input's resolution. It needs the torch
model, imported inside that function only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from san.contract.device import Device
from san.data.market import DUKEMTMCREID, MARKET1501
from san.io.preprocess import decode_image, load_image

BORDER, PAD, GAP = 4, 8, 18
#: Text size in pixels: readable at 100 % on a screen (PIL's own bitmap font is 11 pixels).
FONT_SIZE = 15
LINE = FONT_SIZE + 5
CAPTION_LINES = 2
LEGEND = LINE + PAD
SWATCH = LINE - 6  # a legend entry's colour square
#: Height in pixels of the overlay pictures' colour bar.
COLOUR_BAR = 14
MIN_TILE_HEIGHT = 256
COLOURS = {True: (30, 170, 60), False: (210, 40, 40), None: (150, 150, 150)}
QUERY_COLOUR = (40, 90, 200)
BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)
_ID_PATTERNS: tuple[re.Pattern[str], ...] = (MARKET1501.pattern, DUKEMTMCREID.pattern)
LEGEND_ENTRIES = ((QUERY_COLOUR, "query"), (COLOURS[True], "same person"), (COLOURS[False], "another person"),
                  (COLOURS[None], "id unknown"))
LEGEND_NOTE = "d: distance (smaller is closer)"


@lru_cache(maxsize=1)
def font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font at :data:`FONT_SIZE` pixels."""
    return ImageFont.load_default(size=FONT_SIZE)


def text_width(text: str) -> int:
    """Pixels ``text`` takes in :func:`font`."""
    return int(np.ceil(font().getlength(text)))


@dataclass(frozen=True)
class Tile:
    """One image of a ranked list: where it is, its person id (None: unknown) and its caption lines."""

    path: str | Path
    pid: int | None
    caption: tuple[str, ...]


def person_id(path: str | Path) -> int | None:
    """Person id from a Market-1501 or DukeMTMC-reID file name (``0002_c1s1_000451_03.jpg``); else None."""
    name = Path(path).name
    for pattern in _ID_PATTERNS:
        match = pattern.fullmatch(name)
        if match:
            return int(match[1])
    return None


def _legend_layout() -> tuple[list[int], int]:
    """The x of each legend entry's swatch, and of the note after them."""
    xs, x = [], PAD
    for _, label in LEGEND_ENTRIES:
        xs.append(x)
        x += SWATCH + 4 + text_width(label) + 2 * PAD
    return xs, x


def ranked_list_size(k: int, tile_height: int, tile_width: int) -> tuple[int, int]:
    """(width, height) of a ranked-list picture with ``k`` results (the module doc's formula)."""
    cell_w = tile_width + 2 * BORDER
    width = max(PAD + cell_w + GAP + k * (cell_w + PAD), _legend_layout()[1] + text_width(LEGEND_NOTE) + PAD)
    return width, LEGEND + 2 * PAD + tile_height + 2 * BORDER + CAPTION_LINES * LINE


def _tile(path: str | Path, size: tuple[int, int]) -> Image.Image:
    return decode_image(path).resize(size, Image.Resampling.BILINEAR)


def _cell(canvas: Image.Image, x: int, image: Image.Image, colour: tuple[int, int, int],
          caption: Sequence[str]) -> None:
    draw = ImageDraw.Draw(canvas)
    w, h = image.size
    top = LEGEND + PAD
    draw.rectangle((x, top, x + w + 2 * BORDER - 1, top + h + 2 * BORDER - 1), fill=colour)
    canvas.paste(image, (x + BORDER, top + BORDER))
    for i, line in enumerate(caption[:CAPTION_LINES]):
        draw.text((x + 1, top + h + 2 * BORDER + 2 + i * LINE), line, fill=TEXT, font=font())


def _legend(canvas: Image.Image) -> None:
    draw = ImageDraw.Draw(canvas)
    xs, note_x = _legend_layout()
    for x, (colour, label) in zip(xs, LEGEND_ENTRIES):
        draw.rectangle((x, PAD, x + SWATCH, PAD + SWATCH), fill=colour)
        draw.text((x + SWATCH + 4, PAD - 2), label, fill=TEXT, font=font())
    draw.text((note_x, PAD - 2), LEGEND_NOTE, fill=TEXT, font=font())


def ranked_list_png(query: Tile, results: Sequence[Tile], out: str | Path, tile_height: int = 160,
                    tile_width: int = 80) -> Path:
    """Draw ``query`` and its ranked ``results`` into ``out`` (PNG) under a legend; a result's
    frame is green when its id equals the query's, red when it differs, grey when either is unknown."""
    width, height = ranked_list_size(len(results), tile_height, tile_width)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    _legend(canvas)
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
                           device: Device | str = "cpu") -> list[Path]:
    """One PNG per image in ``out_dir``: the image, then the mask of each attention block (eval mode).

    Files are named ``<image stem>_masks.png`` (``_2``, ``_3``... when stems repeat).
    """
    import torch

    from san.evaluation.evaluate import torch_device_name
    from san.training.checkpoint import load_checkpoint

    name = torch_device_name(device)  # the masks come from the PyTorch model
    model, meta = load_checkpoint(ckpt, map_location=name)
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
            masks = model(torch.from_numpy(image[None]).to(name), details=True).masks
        shares = [m[0].float().mean(0).cpu().numpy() for m in masks]  # C x h x w -> share of channels on, h x w
        tiles = [Image.fromarray(image.transpose(1, 2, 0)), *(overlay(image, share) for share in shares)]
        labels = [("image", f"{meta.spec.height}x{meta.spec.width}"),
                  *((f"block {s} (stage {s})", f"{100 * share.min():.0f}-{100 * share.max():.0f} % on")
                    for s, share in zip(stages, shares))]
        title = f"{Path(path).name}: where each block's mask M = 1[pi > {meta.spec.mask_threshold:g}] is on"
        written.append(_save_strip(tiles, labels, title, _unique(out_dir / f"{Path(path).stem}_masks.png", written)))
    return written


def _enlargement(height: int) -> int:
    """The whole factor that brings a tile to at least :data:`MIN_TILE_HEIGHT` pixels (1 at least)."""
    return max(1, -(-MIN_TILE_HEIGHT // height))


def mask_strip_size(blocks: int, height: int, width: int) -> tuple[int, int]:
    """(width, height) of an overlay picture for a ``height`` x ``width`` contract and ``blocks`` blocks:
    a title line, the tiles with two label lines each, and the colour bar with its line."""
    factor = _enlargement(height)
    return PAD + (blocks + 1) * (width * factor + PAD), LINE + PAD + height * factor + 2 * LINE + COLOUR_BAR + LINE + PAD


def _save_strip(tiles: Sequence[Image.Image], labels: Sequence[tuple[str, str]], title: str, out: Path) -> Path:
    canvas = Image.new("RGB", mask_strip_size(len(tiles) - 1, tiles[0].height, tiles[0].width), BACKGROUND)
    factor = _enlargement(tiles[0].height)
    draw = ImageDraw.Draw(canvas)
    draw.text((PAD, 2), title, fill=TEXT, font=font())
    top = LINE + PAD
    for i, (tile, label) in enumerate(zip(tiles, labels)):
        tile = tile.resize((tile.width * factor, tile.height * factor), Image.Resampling.NEAREST)
        x = PAD + i * (tile.width + PAD)
        canvas.paste(tile, (x, top))
        for j, line in enumerate(label):
            draw.text((x + 1, top + tile.height + 2 + j * LINE), line, fill=TEXT, font=font())
    bar_top = top + tiles[0].height * factor + 2 * LINE
    bar_left, bar_right = PAD + tiles[0].width * factor + PAD, canvas.width - PAD  # under the blocks' tiles
    ramp = heat_colours(np.linspace(0.0, 1.0, bar_right - bar_left)[None, :].repeat(COLOUR_BAR, 0))
    canvas.paste(Image.fromarray(ramp), (bar_left, bar_top))
    low, high = "fewest channels on", "most channels on (each block's own range, above)"
    draw.text((bar_left, bar_top + COLOUR_BAR + 1), low, fill=TEXT, font=font())
    draw.text((bar_right - text_width(high), bar_top + COLOUR_BAR + 1), high, fill=TEXT, font=font())
    canvas.save(out, format="PNG")
    return out


def _unique(path: Path, taken: Sequence[Path]) -> Path:
    candidate, n = path, 1
    while candidate in taken:
        n += 1
        candidate = path.with_name(f"{path.stem}_{n}{path.suffix}")
    return candidate
