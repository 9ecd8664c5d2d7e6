"""Rendering SynPOPE scenes: coloured shapes on a small canvas, then covariate shifts."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from monitor.synpope.shift import Shift
from monitor.synpope.world import COLOUR_RGB, COLOURS, SHAPES

__all__ = ["CANVAS", "Placed", "place_objects", "render_scene"]

CANVAS = 64  # px; the fixture models see 64 x 64 (16 patches of 16 px)
_SIZE_RANGE = (8, 22)  # object size in px: small ones are hard to bind colour and shape for (graded difficulty)
_PLAIN = (232, 232, 232)
_DARK = (40, 40, 44)


@dataclass(frozen=True)
class Placed:
    name: str  # "red circle"
    x: int  # top-left corner
    y: int
    size: int


def place_objects(names: list[str], rng: random.Random, canvas: int = CANVAS) -> list[Placed]:
    """Non-overlapping positions for ``names`` (rejection sampling; up to 3 objects fit)."""
    for _ in range(200):
        placed: list[Placed] = []
        for name in names:
            size = rng.randint(*_SIZE_RANGE)
            for _ in range(50):
                x, y = rng.randint(1, canvas - size - 1), rng.randint(1, canvas - size - 1)
                if all(x + size + 2 <= p.x or p.x + p.size + 2 <= x or y + size + 2 <= p.y or p.y + p.size + 2 <= y for p in placed):
                    placed.append(Placed(name, x, y, size))
                    break
            else:
                break
        if len(placed) == len(names):
            return placed
    raise ValueError(f"cannot place {len(names)} objects on a {canvas} px canvas")


def _concept_maps(concept: str) -> tuple[dict[str, str], dict[str, str]]:
    """Which colour / shape is drawn for each name (a cyclic remap under a concept shift)."""
    colours = {c: c for c in COLOURS}
    shapes = {s: s for s in SHAPES}
    if concept == "colours":
        colours = {c: COLOURS[(i + 1) % len(COLOURS)] for i, c in enumerate(COLOURS)}
    elif concept == "shapes":
        shapes = {s: SHAPES[(i + 1) % len(SHAPES)] for i, s in enumerate(SHAPES)}
    return colours, shapes


def _star(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    pts = []
    for k in range(10):
        rad = r if k % 2 == 0 else r * 0.45
        a = -math.pi / 2 + k * math.pi / 5
        pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return pts


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, p: Placed, fill: tuple[int, int, int]) -> None:
    x0, y0, s = p.x, p.y, p.size
    x1, y1 = x0 + s, y0 + s
    cx, cy = x0 + s / 2, y0 + s / 2
    if shape == "circle":
        draw.ellipse([x0, y0, x1, y1], fill=fill)
    elif shape == "square":
        m = s * 0.08
        draw.rectangle([x0 + m, y0 + m, x1 - m, y1 - m], fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill)
    elif shape == "star":
        draw.polygon(_star(cx, cy, s / 2), fill=fill)
    elif shape == "cross":
        t = s / 3
        draw.rectangle([cx - t / 2, y0, cx + t / 2, y1], fill=fill)
        draw.rectangle([x0, cy - t / 2, x1, cy + t / 2], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=fill)
    else:  # pragma: no cover - names come from the world
        raise ValueError(f"unknown shape {shape!r}")


def _background(shift: Shift, rng: random.Random, canvas: int) -> Image.Image:
    if shift.background == "dark":
        return Image.new("RGB", (canvas, canvas), _DARK)
    if shift.background == "random":
        return Image.new("RGB", (canvas, canvas), tuple(rng.randint(90, 255) for _ in range(3)))
    img = Image.new("RGB", (canvas, canvas), _PLAIN)
    if shift.background == "textured":
        draw = ImageDraw.Draw(img)
        for _ in range(14):
            r = rng.randint(3, 10)
            x, y = rng.randint(0, canvas), rng.randint(0, canvas)
            grey = rng.randint(150, 215)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=(grey, grey, grey))
    return img


def render_scene(placed: list[Placed], shift: Shift, noise_seed: int, canvas: int = CANVAS) -> Image.Image:
    """Draw the placed objects, then apply the covariate knobs (contrast, blur, noise)."""
    colours, shapes = _concept_maps(shift.concept)
    # covariate knobs draw from their own stream, so that they leave the scenes unchanged
    img = _background(shift, random.Random(noise_seed), canvas)
    draw = ImageDraw.Draw(img)
    for p in placed:
        colour, shape = p.name.split(" ")
        _draw_shape(draw, shapes[shape], p, COLOUR_RGB[colours[colour]])
    if shift.contrast != 1.0:
        img = ImageEnhance.Contrast(img).enhance(shift.contrast)
    if shift.blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(radius=shift.blur))
    if shift.noise > 0:
        arr = np.asarray(img, dtype=np.float32)
        arr = arr + np.random.default_rng(noise_seed).normal(0.0, shift.noise * 255.0, arr.shape)
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return img
