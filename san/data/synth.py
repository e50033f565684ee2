"""Synthetic person re-ID data set in the Market-1501 layout (the toolkit's built-in default).

Every image is drawn from random parameters keyed by ``(seed, pid, camera, index)``, so the
output is byte-identical for a seed whatever the generation order. Identities share clothing
colour pairs and differ by pattern, accessories, hair and build; cameras differ by lighting,
colour cast, viewpoint, framing and background, and every detection has its own box jitter,
clutter and (sometimes) an occluder, so a global colour histogram is not enough to
re-identify a person across cameras. Pure NumPy + PIL.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from san.io.atomic import writing
from san.io.progress import progress_bar

GENERATOR_VERSION = 1  # bump whenever rendering changes, so cached sets are regenerated
MANIFEST = "synth.json"
TRAIN, QUERY, GALLERY = "bounding_box_train", "query", "bounding_box_test"
SPLITS = (TRAIN, QUERY, GALLERY)
DISTRACTOR_PID, JUNK_PID = 0, -1

SUPERSAMPLE = 2  # draw at 2x, then box-filter down while cropping the detection box
CANVAS_MARGIN = 1.3  # drawing canvas / nominal detection box: room for box jitter
SCENE_SPAN = (3.0, 1.15)  # camera scene / canvas: people are detected at different places

RGB = tuple[int, int, int]
Box = tuple[float, float, float, float]  # (x0, y0, x1, y1) as fractions of an area
Patch = tuple[Box, RGB]
Progress = Callable[[Sequence["SynthImage"]], Iterable["SynthImage"]]


def rendering_progress(enabled: bool) -> Progress:
    """What wraps the images being rendered: a bar on a terminal, lines in a log
    (:mod:`san.io.progress`), or nothing when not ``enabled``."""
    return lambda images: progress_bar(images, enabled=enabled, desc="rendering", unit="img")

# Few colours, so that many identities share an upper/lower colour pair.
UPPER_PALETTE: tuple[RGB, ...] = (
    (200, 40, 40),
    (235, 235, 230),
    (35, 35, 40),
    (40, 70, 160),
    (60, 130, 70),
    (230, 200, 60),
)
LOWER_PALETTE: tuple[RGB, ...] = ((45, 60, 110), (30, 30, 32), (120, 120, 125), (190, 170, 130))
PATTERN_PALETTE: tuple[RGB, ...] = ((245, 245, 245), (20, 20, 20), (220, 120, 30), (90, 160, 220))
HAIR_PALETTE: tuple[RGB, ...] = ((20, 15, 10), (90, 55, 25), (200, 170, 90), (150, 150, 150))
SKIN_PALETTE: tuple[RGB, ...] = ((240, 200, 170), (200, 150, 110), (140, 95, 60), (90, 60, 40))
ACCESSORY_PALETTE: tuple[RGB, ...] = ((70, 40, 20), (20, 20, 20), (150, 30, 40), (60, 90, 60))
PATTERNS = ("plain", "hstripes", "vstripes", "checks", "logo")

# Random-stream tags, one per kind of decision. Each tag always takes the same number of keys:
# SeedSequence ignores trailing zeros, so (tag, 1) and (tag, 1, 0) would collide.
_SPLIT, _PLAN, _PLACE, _PERSON, _DISTRACTOR_PERSON, _CAMERA, _SHOT, _NAME = range(8)
# Image kinds: identities, pid-0000 distractors, pid -1 junk.
_IDENTITY, _DISTRACTOR, _JUNK = range(3)
_KIND_OF_PID = {DISTRACTOR_PID: _DISTRACTOR, JUNK_PID: _JUNK}
_BOX_SLOPPINESS = {_IDENTITY: 1.0, _DISTRACTOR: 2.5, _JUNK: 4.0}


def _rng(seed: int, tag: int, *keys: int) -> np.random.Generator:
    """Independent generator for one (seed, tag, keys) tuple."""
    return np.random.default_rng([seed, tag, *keys])


@dataclass(frozen=True)
class SynthParams:
    """Everything that determines a synthetic set; equal params mean identical files."""

    ids: int = 100
    cameras: int = 4
    seed: int = 0
    images_per_camera: tuple[int, int] = (2, 4)
    height: int = 128
    width: int = 64
    test_fraction: float = 0.5
    quality: int = 90
    first_pid: int = 1  # pids first_pid .. first_pid + ids - 1: another range, other people, same cameras

    def __post_init__(self) -> None:
        object.__setattr__(self, "images_per_camera", tuple(self.images_per_camera))
        lo, hi = self.images_per_camera
        checks = (
            (2 <= self.ids <= 9999, f"ids must be in 2..9999 (4-digit pids), got {self.ids}"),
            (2 <= self.cameras <= 9, f"cameras must be in 2..9 (Market 'cN' names), got {self.cameras}"),
            (self.seed >= 0, f"seed must be >= 0, got {self.seed}"),
            (
                2 <= lo <= hi <= 100,
                "images_per_camera must be MIN MAX with 2 <= MIN <= MAX <= 100 "
                f"(one query plus at least one gallery image per camera), got {self.images_per_camera}",
            ),
            (
                self.height >= 32 and self.width >= 16,
                f"image size must be at least 32x16, got {self.height}x{self.width}",
            ),
            (0.0 < self.test_fraction < 1.0, f"test_fraction must be in (0, 1), got {self.test_fraction}"),
            (1 <= self.quality <= 95, f"quality must be in 1..95, got {self.quality}"),
            (
                1 <= self.first_pid and self.first_pid + self.ids - 1 <= 9999,
                f"pids {self.first_pid}..{self.first_pid + self.ids - 1} must lie in 1..9999 (4-digit pids)",
            ),
        )
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def test_ids(self) -> int:
        """Number of test identities (at least one train and one test id)."""
        return min(max(round(self.ids * self.test_fraction), 1), self.ids - 1)

    @property
    def distractors(self) -> int:
        """Number of pid-0000 distractor images in the gallery."""
        return max(2, self.ids // 4)

    @property
    def junk(self) -> int:
        """Number of pid -1 junk images in the gallery."""
        return max(2, self.ids // 10)


@dataclass(frozen=True)
class SynthSummary:
    """What a generated (or reused) set holds."""

    root: Path
    params: SynthParams
    train_ids: int
    test_ids: int
    images: dict[str, int]  # split folder -> image count
    reused: bool = False

    def describe(self) -> str:
        """A few lines for humans: ids, images per split, cameras."""
        p = self.params
        lines = [
            f"synthetic re-ID set at {self.root} ({'reused' if self.reused else 'generated'})",
            f"  ids: {self.train_ids} train, {self.test_ids} test; cameras: {p.cameras}; "
            f"image size: {p.height}x{p.width}; seed: {p.seed}",
        ]
        lines += [f"  {split:<18}{self.images[split]:>7} images" for split in SPLITS]
        lines.append(
            f"  (the gallery holds {p.distractors} distractors, pid 0000, and {p.junk} junk, pid -1)"
        )
        return "\n".join(lines)


@dataclass(frozen=True)
class SynthImage:
    """One planned image: where it goes and the keys of its random streams."""

    split: str
    pid: int  # 1.., or DISTRACTOR_PID / JUNK_PID
    cam: int  # 1-based
    index: int  # per (pid, cam) for identities, running over all distractors (or junk)

    @property
    def kind(self) -> int:
        return _KIND_OF_PID.get(self.pid, _IDENTITY)

    @property
    def keys(self) -> tuple[int, int, int, int]:
        """Non-negative keys identifying this image among all images of a seed."""
        return (self.kind, max(self.pid, 0), self.cam, self.index)

    def filename(self, seed: int) -> str:
        """Market-1501 name ``PPPP_cCs1_FFFFFF_NN.jpg`` (``-1_...`` for junk)."""
        rng = _rng(seed, _NAME, *self.keys)
        frame = 1 + 40 * self.index + int(rng.integers(40))  # increasing, unique per (pid, cam)
        pid = "-1" if self.pid == JUNK_PID else f"{self.pid:04d}"
        return f"{pid}_c{self.cam}s1_{frame:06d}_{int(rng.integers(3)):02d}.jpg"


@dataclass(frozen=True)
class Person:
    """Identity appearance: fixed across cameras and frames."""

    upper: RGB
    lower: RGB
    pattern: str
    pattern_colour: RGB
    long_sleeves: bool
    skin: RGB
    hair: RGB
    hat: RGB | None
    bag_side: int  # 0 none, -1 person's left, +1 person's right
    bag: RGB
    backpack: RGB | None
    shoes: RGB
    stature: float  # figure height relative to the camera's nominal
    build: float  # width multiplier


@dataclass(frozen=True)
class Camera:
    """Per-camera look: lighting, colour cast, viewpoint, framing and background."""

    gain: float
    cast: tuple[float, float, float]  # per-channel multipliers
    back_view_probability: float
    shear: float
    scale: float
    offset: tuple[float, float]  # (dx, dy) of the person, fractions of the detection box
    wall: RGB
    floor: RGB
    horizon: float  # fraction of the scene height
    fixtures: tuple[Patch, ...]  # static boxes, scene fractions
    noise: float  # sensor noise standard deviation, grey levels


@dataclass(frozen=True)
class Shot:
    """Per-image random parameters: pose, framing, clutter, occlusion, lighting jitter."""

    back_view: bool
    view: tuple[float, float]  # where the canvas lies in the camera scene, fractions of the slack
    shear: float
    scale: float
    offset: tuple[float, float]
    stride: float
    arm_swing: float
    box: Box  # detection box, canvas fractions
    clutter: tuple[Patch, ...]  # canvas fractions
    occluder: Patch | None
    gain: float
    noise_offset: int  # where this image's sensor noise starts in the shared noise bank


def _rgb(values: Iterable[float]) -> RGB:
    r, g, b = (int(np.clip(v, 0, 255)) for v in values)
    return (r, g, b)


def _shade(rng: np.random.Generator, colour: RGB, spread: float = 0.12) -> RGB:
    """The colour with a small random brightness change."""
    factor = 1.0 + rng.uniform(-spread, spread)
    return _rgb(c * factor for c in colour)


def _pick(rng: np.random.Generator, palette: Sequence[RGB]) -> RGB:
    return palette[int(rng.integers(len(palette)))]


def _muted(rng: np.random.Generator, low: int = 40, high: int = 210) -> RGB:
    """A scene colour: a random grey level with a little tint."""
    return _rgb(rng.uniform(low, high) + rng.uniform(-35, 35, size=3))


def _random_box(rng: np.random.Generator, min_size: float, max_size: float) -> Box:
    """A box of random size and place, possibly sticking out of the area."""
    w, h = rng.uniform(min_size, max_size, size=2)
    x0, y0 = rng.uniform(-0.1, 1.0 - w * 0.5), rng.uniform(-0.1, 1.0 - h * 0.5)
    return (x0, y0, x0 + w, y0 + h)


@lru_cache(maxsize=4096)
def draw_person(seed: int, pid: int, distractor: bool = False) -> Person:
    """Random appearance of identity ``pid`` (or of distractor number ``pid``)."""
    rng = _rng(seed, _DISTRACTOR_PERSON if distractor else _PERSON, pid)
    return Person(
        upper=_shade(rng, _pick(rng, UPPER_PALETTE)),
        lower=_shade(rng, _pick(rng, LOWER_PALETTE)),
        pattern=PATTERNS[int(rng.integers(len(PATTERNS)))],
        pattern_colour=_pick(rng, PATTERN_PALETTE),
        long_sleeves=bool(rng.random() < 0.5),
        skin=_pick(rng, SKIN_PALETTE),
        hair=_pick(rng, HAIR_PALETTE),
        hat=_pick(rng, ACCESSORY_PALETTE + UPPER_PALETTE) if rng.random() < 0.25 else None,
        bag_side=int(rng.choice([0, 0, -1, 1])),
        bag=_pick(rng, ACCESSORY_PALETTE),
        backpack=_pick(rng, ACCESSORY_PALETTE + LOWER_PALETTE) if rng.random() < 0.3 else None,
        shoes=_pick(rng, ACCESSORY_PALETTE + ((235, 235, 235),)),
        stature=float(rng.uniform(0.86, 1.0)),
        build=float(rng.uniform(0.8, 1.2)),
    )


@lru_cache(maxsize=64)
def draw_camera(seed: int, cam: int) -> Camera:
    """Random look of camera ``cam``."""
    rng = _rng(seed, _CAMERA, cam)
    r, g, b = rng.uniform(0.88, 1.12, size=3)
    fixtures = tuple((_random_box(rng, 0.05, 0.3), _muted(rng)) for _ in range(int(rng.integers(5, 11))))
    return Camera(
        gain=float(rng.uniform(0.85, 1.15)),
        cast=(float(r), float(g), float(b)),
        back_view_probability=float(rng.uniform(0.1, 0.9)),
        shear=float(rng.uniform(-0.12, 0.12)),
        scale=float(rng.uniform(0.8, 0.97)),
        offset=(float(rng.uniform(-0.1, 0.1)), float(rng.uniform(-0.04, 0.04))),
        wall=_muted(rng, 90, 220),
        floor=_muted(rng, 50, 170),
        horizon=float(rng.uniform(0.45, 0.8)),
        fixtures=fixtures,
        noise=float(rng.uniform(2.0, 7.0)),
    )


def draw_shot(seed: int, image: SynthImage, camera: Camera) -> Shot:
    """Random per-image parameters; distractors and junk get sloppier detection boxes."""
    rng = _rng(seed, _SHOT, *image.keys)
    inner = 1.0 / CANVAS_MARGIN
    size = inner * rng.uniform(0.92, 1.08)
    jitter = rng.uniform([-0.06, -0.04], [0.06, 0.04]) * inner * _BOX_SLOPPINESS[image.kind]
    cx, cy = np.clip(0.5 + jitter, size / 2, 1 - size / 2)
    clutter = tuple(
        (_random_box(rng, 0.05, 0.35), _muted(rng, 10, 245)) for _ in range(int(rng.integers(1, 4)))
    )
    occluder = (_occluder_box(rng, inner), _muted(rng, 20, 200)) if rng.random() < 0.25 else None
    return Shot(
        back_view=bool(rng.random() < camera.back_view_probability),
        view=(float(rng.random()), float(rng.random())),
        shear=camera.shear + float(rng.uniform(-0.03, 0.03)),
        scale=camera.scale * float(rng.uniform(0.95, 1.05)),
        offset=(
            camera.offset[0] + float(rng.uniform(-0.05, 0.05)),
            camera.offset[1] + float(rng.uniform(-0.02, 0.02)),
        ),
        stride=float(rng.uniform(0.0, 0.09)),
        arm_swing=float(rng.uniform(-0.05, 0.07)),
        box=(cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2),
        clutter=clutter,
        occluder=occluder,
        gain=float(rng.uniform(0.9, 1.1)),
        noise_offset=int(rng.integers(2**31)),
    )


def _occluder_box(rng: np.random.Generator, inner: float) -> Box:
    """A canvas box hiding the bottom (car, bench) or one side (pole, passer-by) of the person."""
    lo, hi = 0.5 - inner / 2, 0.5 + inner / 2
    depth = rng.uniform(0.2, 0.45) * inner
    side = int(rng.integers(3))
    if side == 0:
        return (0.0, hi - depth, 1.0, 1.0)
    if side == 1:
        return (0.0, 0.0, lo + depth, 1.0)
    return (hi - depth, 0.0, 1.0, 1.0)


@dataclass(frozen=True)
class _Pen:
    """Draws in body coordinates: x centred, y from 0 (head top) to 1 (feet), unit = stature."""

    draw: ImageDraw.ImageDraw
    cx: float
    top: float
    size: float
    flip: float  # -1: seen from the front (person's left on image right), +1: from behind
    shear: float

    def xy(self, x: float, y: float) -> tuple[float, float]:
        x = self.flip * x + self.shear * (y - 1.0)  # feet stay put, the head leans
        return (self.cx + x * self.size, self.top + y * self.size)

    def rect(self, x0: float, y0: float, x1: float, y1: float, fill: RGB) -> None:
        self.polygon([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], fill)

    def polygon(self, points: Sequence[tuple[float, float]], fill: RGB) -> None:
        self.draw.polygon([self.xy(x, y) for x, y in points], fill=fill)

    def limb(self, points: Sequence[tuple[float, float]], width: float, fill: RGB) -> None:
        pixels = [self.xy(x, y) for x, y in points]
        self.draw.line(pixels, fill=fill, width=max(1, round(width * self.size)), joint="curve")

    def ellipse(self, x: float, y: float, rx: float, ry: float, fill: RGB) -> None:
        px, py = self.xy(x, y)
        rx, ry = rx * self.size, ry * self.size
        self.draw.ellipse([px - rx, py - ry, px + rx, py + ry], fill=fill)


def _draw_pattern(pen: _Pen, person: Person, torso: Box, back_view: bool) -> None:
    """Stripes, checks or a chest logo inside the torso box (logos only show from the front)."""
    x0, y0, x1, y1 = torso
    period, colour = 0.06, person.pattern_colour
    if person.pattern == "hstripes":
        for y in np.arange(y0, y1, period):
            pen.rect(x0, y, x1, min(y + period / 2, y1), colour)
    elif person.pattern == "vstripes":
        for x in np.arange(x0, x1, period):
            pen.rect(x, y0, min(x + period / 2, x1), y1, colour)
    elif person.pattern == "checks":
        for i, y in enumerate(np.arange(y0, y1, period)):
            for j, x in enumerate(np.arange(x0, x1, period)):
                if (i + j) % 2:
                    pen.rect(x, y, min(x + period, x1), min(y + period, y1), colour)
    elif person.pattern == "logo" and not back_view:
        pen.rect(-0.05, y0 + 0.05, 0.05, y0 + 0.14, colour)


def _draw_figure(pen: _Pen, person: Person, shot: Shot) -> None:
    """Legs, torso, arms, accessories and head, back to front."""
    b = person.build
    shoulder, waist, hip = 0.16 * b, 0.13 * b, 0.5
    if person.backpack and not shot.back_view:  # from the front only its edges show
        pen.rect(-0.16 * b, 0.17, 0.16 * b, 0.42, person.backpack)
    for side in (-1, 1):
        foot = side * (0.06 * b + shot.stride * (1 if side > 0 else 0.6))
        pen.limb([(side * 0.06 * b, hip), (foot, 0.95)], 0.1 * b, person.lower)
        pen.ellipse(foot + side * 0.01, 0.965, 0.045, 0.025, person.shoes)
    pen.polygon(
        [(-shoulder, 0.15), (shoulder, 0.15), (waist, hip + 0.02), (-waist, hip + 0.02)], person.upper
    )
    _draw_pattern(pen, person, (-waist, 0.17, waist, hip), shot.back_view)
    for side in (-1, 1):
        swing = shot.arm_swing * side
        top, elbow = (side * shoulder, 0.17), (side * (shoulder + 0.02) + swing / 2, 0.33)
        wrist = (side * (shoulder + 0.03) + swing, 0.48)
        pen.limb([top, elbow, wrist], 0.065 * b, person.skin)
        pen.limb(
            [top, elbow, wrist] if person.long_sleeves else [top, (elbow[0], 0.26)], 0.07 * b, person.upper
        )
        pen.ellipse(wrist[0], wrist[1] + 0.015, 0.025, 0.03, person.skin)
    if person.backpack and shot.back_view:
        pen.rect(-0.11 * b, 0.18, 0.11 * b, 0.44, person.backpack)
    if person.bag_side:
        side = person.bag_side
        pen.limb([(-side * shoulder * 0.7, 0.16), (side * 0.2 * b, 0.44)], 0.015, person.bag)
        pen.rect(side * 0.16 * b, 0.42, side * 0.27 * b, 0.57, person.bag)
    _draw_head(pen, person, shot.back_view)


def _draw_head(pen: _Pen, person: Person, back_view: bool) -> None:
    """Neck, hair, face (hidden from behind) and an optional cap."""
    pen.rect(-0.025, 0.11, 0.025, 0.16, person.skin)
    pen.ellipse(0.0, 0.065, 0.055, 0.066, person.hair)
    if not back_view:
        pen.ellipse(0.0, 0.078, 0.046, 0.054, person.skin)
    if person.hat:
        pen.rect(-0.058, -0.005, 0.058, 0.035, person.hat)
        pen.rect(-0.058, 0.025, 0.085, 0.038, person.hat)


def _draw_patches(draw: ImageDraw.ImageDraw, patches: Iterable[Patch], size: tuple[int, int]) -> None:
    """Fill boxes given as fractions of an area of ``size`` pixels."""
    w, h = size
    for (x0, y0, x1, y1), colour in patches:
        draw.rectangle([x0 * w, y0 * h, x1 * w, y1 * h], fill=colour)


@lru_cache(maxsize=64)
def _scene(camera: Camera, size: tuple[int, int]) -> Image.Image:
    """Static view of a camera (``size`` pixels): wall gradient, floor and fixtures."""
    w, h = size
    horizon = int(camera.horizon * h)
    t = np.linspace(0.0, 1.0, horizon, dtype=np.float32)[:, None]
    wall = np.asarray(camera.wall, np.float32) * (1.15 - 0.4 * t)
    floor = np.broadcast_to(np.asarray(camera.floor, np.float32), (h - horizon, 3))
    column = np.clip(np.concatenate([wall, floor]), 0, 255).astype(np.uint8)
    image = Image.fromarray(np.ascontiguousarray(np.broadcast_to(column[:, None, :], (h, w, 3))))
    _draw_patches(ImageDraw.Draw(image), camera.fixtures, size)
    return image


def _canvas(camera: Camera, shot: Shot, size: tuple[int, int]) -> Image.Image:
    """The part of the camera scene around this detection, with per-frame clutter."""
    scene = _scene(camera, (round(size[0] * SCENE_SPAN[0]), round(size[1] * SCENE_SPAN[1])))
    left, top = (round(v * (s - c)) for v, s, c in zip(shot.view, scene.size, size, strict=True))
    canvas = scene.crop((left, top, left + size[0], top + size[1]))
    _draw_patches(ImageDraw.Draw(canvas), shot.clutter, size)
    return canvas


def _figure_pen(
    draw: ImageDraw.ImageDraw, person: Person, shot: Shot, size: tuple[int, int], box: tuple[int, int]
) -> _Pen:
    """Place the figure: feet near the bottom of the nominal ``box`` (w, h), shifted and scaled per shot."""
    stature = box[1] * 0.92 * shot.scale * person.stature
    feet = size[1] / 2 + box[1] * (0.46 + shot.offset[1])
    cx = size[0] / 2 + box[0] * shot.offset[0]
    return _Pen(draw, cx, feet - stature, stature, 1.0 if shot.back_view else -1.0, shot.shear)


@lru_cache(maxsize=8)
def _noise_bank(size: int) -> np.ndarray:
    """Fixed standard-normal samples, 4x an image: slicing is much faster than sampling anew."""
    return np.random.default_rng(0).standard_normal(4 * size, dtype=np.float32)


def _apply_camera(pixels: np.ndarray, camera: Camera, shot: Shot) -> np.ndarray:
    """Lighting gain, colour cast and sensor noise."""
    gain = np.asarray(camera.cast, np.float32) * np.float32(camera.gain * shot.gain)
    start = shot.noise_offset % (3 * pixels.size)
    noise = _noise_bank(pixels.size)[start : start + pixels.size].reshape(pixels.shape)
    out = pixels * gain
    out += noise * np.float32(camera.noise)
    return np.clip(out, 0.0, 255.0, out=out).astype(np.uint8)


def render(person: Person | None, camera: Camera, shot: Shot, height: int, width: int) -> np.ndarray:
    """One detection crop, uint8 [height, width, 3]; ``person=None`` gives background only."""
    size = (round(width * SUPERSAMPLE * CANVAS_MARGIN), round(height * SUPERSAMPLE * CANVAS_MARGIN))
    canvas = _canvas(camera, shot, size)
    draw = ImageDraw.Draw(canvas)
    if person is not None:
        box = (width * SUPERSAMPLE, height * SUPERSAMPLE)
        _draw_figure(_figure_pen(draw, person, shot, size, box), person, shot)
    if shot.occluder is not None:
        _draw_patches(draw, (shot.occluder,), size)
    x0, y0, x1, y1 = shot.box
    pixel_box = (x0 * size[0], y0 * size[1], x1 * size[0], y1 * size[1])
    crop = canvas.resize((width, height), Image.Resampling.BOX, box=pixel_box)
    return _apply_camera(np.asarray(crop), camera, shot)


def _person_of(seed: int, image: SynthImage) -> Person | None:
    """Who is in the image: the identity, a one-off distractor, or nobody (junk)."""
    if image.kind == _JUNK:
        return None
    if image.kind == _DISTRACTOR:
        return draw_person(seed, image.index, distractor=True)
    return draw_person(seed, image.pid)


def render_image(params: SynthParams, image: SynthImage) -> bytes:
    """JPEG bytes of one planned image."""
    camera = draw_camera(params.seed, image.cam)
    shot = draw_shot(params.seed, image, camera)
    pixels = render(_person_of(params.seed, image), camera, shot, params.height, params.width)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=params.quality)
    return buffer.getvalue()


def split_ids(params: SynthParams) -> tuple[list[int], list[int]]:
    """(train pids, test pids): disjoint, drawn by seed."""
    first = params.first_pid
    pids = [int(p) for p in _rng(params.seed, _SPLIT).permutation(np.arange(first, first + params.ids))]
    return sorted(pids[params.test_ids :]), sorted(pids[: params.test_ids])


def _identity_images(params: SynthParams, pid: int, test: bool) -> list[SynthImage]:
    """One identity over a random subset (>= 2) of cameras; test ids give one query per camera."""
    rng = _rng(params.seed, _PLAN, pid)
    count = int(rng.integers(2, params.cameras + 1))
    cams = sorted(int(c) + 1 for c in rng.permutation(params.cameras)[:count])
    lo, hi = params.images_per_camera
    images = []
    for cam in cams:
        for index in range(int(rng.integers(lo, hi + 1))):
            split = (QUERY if index == 0 else GALLERY) if test else TRAIN
            images.append(SynthImage(split, pid, cam, index))
    return images


def _stray_images(params: SynthParams, pid: int, count: int) -> list[SynthImage]:
    """Distractor or junk gallery images, each from a random camera."""
    cams = [
        int(_rng(params.seed, _PLACE, _KIND_OF_PID[pid], index).integers(params.cameras)) + 1
        for index in range(count)
    ]
    return [SynthImage(GALLERY, pid, cam, index) for index, cam in enumerate(cams)]


def plan_images(params: SynthParams) -> list[SynthImage]:
    """Every image of the set, in a fixed order."""
    train, test = split_ids(params)
    images = [image for pid in train for image in _identity_images(params, pid, test=False)]
    images += [image for pid in test for image in _identity_images(params, pid, test=True)]
    images += _stray_images(params, DISTRACTOR_PID, params.distractors)
    images += _stray_images(params, JUNK_PID, params.junk)
    return images


def _manifest(summary: SynthSummary) -> dict[str, Any]:
    return {
        "generator_version": GENERATOR_VERSION,
        "params": asdict(summary.params),
        "train_ids": summary.train_ids,
        "test_ids": summary.test_ids,
        "images": summary.images,
    }


def _existing_summary(out: Path, params: SynthParams) -> SynthSummary | None:
    """The summary of a complete set already at ``out`` with these params, else None."""
    try:
        manifest = json.loads((out / MANIFEST).read_text())
        same = (
            manifest["generator_version"] == GENERATOR_VERSION and SynthParams(**manifest["params"]) == params
        )
        complete = same and all(
            sum(1 for _ in (out / split).glob("*.jpg")) == manifest["images"][split] for split in SPLITS
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not complete:
        return None
    return SynthSummary(
        out, params, manifest["train_ids"], manifest["test_ids"], manifest["images"], reused=True
    )


def read_params(root: Path) -> SynthParams:
    """The parameters a synthetic set at ``root`` was made with (from its manifest)."""
    path = Path(root) / MANIFEST
    try:
        return SynthParams(**json.loads(path.read_text())["params"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not the manifest of a synthetic set ({error})") from None


def held_out_params(params: SynthParams) -> SynthParams:
    """A set like ``params`` with the pids numbered after its own: the same cameras and
    generator, other people. A validation split that sees neither the training nor the
    test identities, yet no camera shift either."""
    return replace(params, first_pid=params.first_pid + params.ids)


def _refuse_foreign(out: Path) -> None:
    """Raise unless ``out`` is absent, an empty folder, or a synthetic set (which may be replaced)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise FileExistsError(
            f"{out} exists and is not a folder; refusing to write a synthetic data set there"
        )
    if any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise FileExistsError(
            f"{out} is a non-empty folder without {MANIFEST} (not a synthetic set); refusing to overwrite it"
        )


def _sibling(out: Path, label: str) -> Path:
    """A fresh hidden folder beside ``out`` (same file system, so renames are atomic)."""
    path = out.parent / f".{out.name}.{label}-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


def _publish(staging: Path, out: Path) -> None:
    """Move the finished staging folder to ``out``, replacing an older synthetic set there."""
    if not out.exists():
        os.replace(staging, out)
        return
    retired = _sibling(out, "old")
    os.replace(out, retired / out.name)
    os.replace(staging, out)
    shutil.rmtree(retired)


def _write_images(folder: Path, params: SynthParams, images: Iterable[SynthImage]) -> None:
    for split in SPLITS:
        (folder / split).mkdir()
    for image in images:
        (folder / image.split / image.filename(params.seed)).write_bytes(render_image(params, image))


def generate(out: Path, params: SynthParams, *, progress: Progress | None = None) -> SynthSummary:
    """Write the set ``params`` describe to ``out`` in the Market-1501 layout, always anew
    (``ensure_synthetic`` reuses).

    Layout: ``bounding_box_train/`` (train ids), ``query/`` (one image per test id per camera),
    ``bounding_box_test/`` (the other test images, distractors pid 0000, junk pid -1) and
    ``synth.json``. Files go to a hidden staging folder beside ``out`` that is renamed into
    place when complete. ``progress`` may wrap the planned images (e.g. with ``tqdm``).
    Raises ValueError for bad parameters and FileExistsError if ``out`` holds anything
    other than a synthetic set.
    """
    out = Path(out)
    _refuse_foreign(out)
    images = plan_images(params)
    counts = {split: sum(image.split == split for image in images) for split in SPLITS}
    summary = SynthSummary(out, params, params.ids - params.test_ids, params.test_ids, counts)
    with writing(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = _sibling(out, "tmp")
        try:
            _write_images(staging, params, progress(images) if progress else images)
            (staging / MANIFEST).write_text(json.dumps(_manifest(summary), indent=2) + "\n")
            _publish(staging, out)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return summary


def ensure_synthetic(out: Path, *, progress: Progress | None = None, **params: Any) -> SynthSummary:
    """Reuse a complete set at ``out`` made with the same parameters, else ``generate`` one where
    there is none. A set made with other parameters is never replaced: ``FileExistsError``."""
    wanted = SynthParams(**params)
    existing = _existing_summary(Path(out), wanted)
    if existing is not None:
        return existing
    _refuse_other_set(Path(out), wanted)
    return generate(Path(out), wanted, progress=progress)


def _refuse_other_set(out: Path, wanted: SynthParams) -> None:
    """Raise when ``out`` holds a synthetic set other than the one ``wanted`` describes."""
    try:
        made = read_params(out)
    except (OSError, ValueError, KeyError, TypeError):
        return  # no readable manifest: nothing of ours to keep (a foreign folder is refused by generate)
    differing = ", ".join(f"{k} {getattr(made, k)!r} (asked: {getattr(wanted, k)!r})"
                          for k in asdict(wanted) if getattr(made, k) != getattr(wanted, k))
    raise FileExistsError(f"{out} holds a synthetic set made with other parameters ({differing or 'another generator version'}); "
                          "refusing to replace it: give another folder, or remove it first")
