"""A few small pictures of the kit's own making, for trying SmolVLM without finding images first.

Each is drawn with PIL primitives only (no fonts, no randomness beyond a fixed seed), so ``draw(name)`` gives the
same pixels every time; the PNGs committed under ``smolkit/data/`` are exactly these drawings. Regenerate them with
``python -m smolkit.sample_images``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw

from smolkit.images import load_image

__all__ = ["DATA_DIR", "SAMPLE_IMAGES", "draw", "sample_image", "sample_image_path", "save_sample_images"]

DATA_DIR = Path(__file__).resolve().parent / "data"
SIZE = (480, 360)

SKY_TOP, SKY_BOTTOM = (70, 130, 200), (190, 220, 245)
GRASS, GRASS_DARK = (80, 160, 60), (55, 125, 45)


def _sky(img: Image.Image, horizon: int) -> None:
    """A vertical gradient from SKY_TOP to SKY_BOTTOM down to ``horizon``."""
    d = ImageDraw.Draw(img)
    for y in range(horizon):
        f = y / max(horizon - 1, 1)
        d.line(
            [(0, y), (img.width, y)],
            fill=tuple(round(a + (b - a) * f) for a, b in zip(SKY_TOP, SKY_BOTTOM, strict=True)),
        )


def _landscape() -> Image.Image:
    img = Image.new("RGB", SIZE, SKY_BOTTOM)
    _sky(img, 230)
    d = ImageDraw.Draw(img)
    d.ellipse([360, 40, 420, 100], fill=(250, 210, 60))  # sun
    d.polygon([(-20, 240), (120, 90), (260, 240)], fill=(120, 120, 135))  # mountains
    d.polygon([(120, 90), (95, 118), (120, 112), (145, 118)], fill=(245, 245, 250))  # snow cap
    d.polygon([(170, 240), (310, 110), (460, 240)], fill=(100, 100, 118))
    d.polygon([(310, 110), (285, 135), (310, 130), (335, 135)], fill=(245, 245, 250))
    d.rectangle([0, 230, SIZE[0], SIZE[1]], fill=GRASS)  # meadow
    d.ellipse([150, 270, 430, 330], fill=(60, 120, 200))  # lake
    d.rectangle([62, 220, 74, 290], fill=(110, 70, 40))  # tree trunk
    d.ellipse([30, 160, 106, 240], fill=(40, 110, 40))  # tree crown
    return img


def _bar_chart() -> Image.Image:
    img = Image.new("RGB", SIZE, (255, 255, 255))
    d = ImageDraw.Draw(img)
    left, bottom, top = 60, 320, 30
    for y in range(bottom, top, -58):  # grid lines
        d.line([(left, y), (450, y)], fill=(225, 225, 225))
    heights = (120, 200, 90, 260, 170)
    colors = ((66, 133, 244), (219, 68, 55), (244, 180, 0), (15, 157, 88), (171, 71, 188))
    for i, (h, c) in enumerate(zip(heights, colors, strict=True)):
        x = left + 20 + i * 76
        d.rectangle([x, bottom - h, x + 50, bottom], fill=c)
    d.line([(left, top), (left, bottom)], fill=(40, 40, 40), width=3)  # axes
    d.line([(left, bottom), (455, bottom)], fill=(40, 40, 40), width=3)
    return img


def _red_ball() -> Image.Image:
    img = Image.new("RGB", SIZE, SKY_BOTTOM)
    _sky(img, 200)
    d = ImageDraw.Draw(img)
    d.rectangle([0, 200, SIZE[0], SIZE[1]], fill=GRASS)
    rng = random.Random(0)  # fixed seed: the same blades of grass every time
    for _ in range(260):
        x, y = rng.randrange(SIZE[0]), rng.randrange(205, SIZE[1])
        d.line([(x, y), (x + rng.randrange(-4, 5), y - rng.randrange(6, 14))], fill=GRASS_DARK, width=2)
    d.ellipse([175, 272, 335, 302], fill=(45, 100, 35))  # shadow
    d.ellipse([180, 170, 300, 290], fill=(210, 30, 30))  # ball
    d.ellipse([205, 190, 245, 225], fill=(240, 120, 110))  # highlight
    return img


def _shapes() -> Image.Image:
    img = Image.new("RGB", SIZE, (250, 250, 245))
    d = ImageDraw.Draw(img)
    d.ellipse([40, 110, 160, 230], fill=(220, 40, 40))  # red circle
    d.rectangle([190, 110, 300, 220], fill=(40, 80, 220))  # blue square
    d.polygon([(330, 225), (390, 105), (450, 225)], fill=(245, 200, 30))  # yellow triangle
    return img


_DRAWERS: dict[str, Callable[[], Image.Image]] = {
    "landscape": _landscape,
    "bar_chart": _bar_chart,
    "red_ball": _red_ball,
    "shapes": _shapes,
}

SAMPLE_IMAGES: dict[str, str] = {
    "landscape": "mountains with snowy peaks under a blue sky with a yellow sun, a green meadow, a lake and a tree",
    "bar_chart": "a bar chart with five coloured bars of different heights (blue, red, yellow, green, purple)",
    "red_ball": "a red ball lying on green grass under a blue sky",
    "shapes": "a red circle, a blue square and a yellow triangle on a white background",
}
"""Each sample image's name and what it shows (in words, for readers and for text-only comparisons)."""


def _check(name: str) -> str:
    if name not in _DRAWERS:
        raise ValueError(f"sample image must be one of {sorted(_DRAWERS)}, got {name!r}")
    return name


def draw(name: str) -> Image.Image:
    """Draw sample image ``name`` (RGB, 480 x 360 pixels); the same pixels every time."""
    return _DRAWERS[_check(name)]()


def sample_image_path(name: str, folder: str | Path = DATA_DIR) -> Path:
    """Where sample image ``name`` is stored as PNG (the package's data folder by default)."""
    return Path(folder) / f"{_check(name)}.png"


def sample_image(name: str) -> Image.Image:
    """Sample image ``name`` as an RGB PIL image, read from the PNG shipped with the package (drawn if missing)."""
    path = sample_image_path(name)
    return load_image(path) if path.is_file() else draw(name)


def save_sample_images(folder: str | Path = DATA_DIR) -> list[Path]:
    """Draw every sample image and save it as PNG in ``folder``; returns the paths written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in _DRAWERS:
        path = sample_image_path(name, folder)
        draw(name).save(path, format="PNG", optimize=True)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in save_sample_images():
        print(written)
