"""Opening images safely for the vision-language models: path or PIL image in, bounded RGB PIL image out.

Only the formats the kit means are decoded (PNG, JPEG, WebP, GIF, BMP, TIFF), recognised by their content, not
their name: Pillow knows many more, and some run other programs (EPS and PDF-like files go to Ghostscript). Every
mode reaches the model as an image viewer shows it: 16-bit and float grayscale scaled to 8 bits, transparent areas
on white, palettes and their transparency applied, and the EXIF orientation of phone photos applied.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from smolkit import _checks

__all__ = ["ALLOWED_FORMATS", "MAX_DECODED_PIXELS", "MAX_IMAGE_EDGE", "MAX_JPEG_PIXELS", "load_image"]

MAX_IMAGE_EDGE = 2048
"""Longest edge kept: SmolVLM's processor upsamples to 2048 px at most, so larger images only cost memory."""

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
"""Pillow's names of the formats load_image decodes (JPEG includes multi-picture JPEGs from phones)."""
FORMAT_NAMES = "PNG, JPEG, WebP, GIF, BMP, TIFF"

MAX_DECODED_PIXELS = 64_000_000
"""Most pixels decoded at full size (an 8000 x 8000 scan, a 48-megapixel photo as PNG): the image is shrunk to
2048 px at once, so more only costs time and memory (a 399-megapixel 1-bit PNG took 5.8 s and 2.2 GB)."""
MAX_JPEG_PIXELS = 400_000_000
"""Most pixels a JPEG may declare: JPEGs are decoded at 1/2, 1/4 or 1/8 scale (draft mode), so a 200-megapixel
phone photo decodes to about 3 megapixels; beyond this a file is a decompression bomb, not a photo."""

WHITE = (255, 255, 255)
_PIL_LIMIT = threading.Lock()  # Pillow's pixel limit is a global: change and restore it one call at a time


def load_image(image: str | os.PathLike | Image.Image, max_edge: int = MAX_IMAGE_EDGE) -> Image.Image:
    """Open ``image`` (a path or a PIL image) as RGB, shrunk so its longest edge is at most ``max_edge`` pixels.

    Raises FileNotFoundError for a missing path and ValueError for a file that is not a PNG, JPEG, WebP, GIF, BMP
    or TIFF image (judged by its content), that cannot be decoded or that is too large, before any model work.
    The file is closed whatever happens. Shrinking happens while decoding where the format allows (JPEG draft
    mode), so a huge photo does not need its full size in memory.
    """
    max_edge = _checks.integer("max_edge", max_edge, lo=1)
    if isinstance(image, Image.Image):
        if getattr(image, "tile", None) and image.format not in ALLOWED_FORMATS:  # not decoded yet
            raise ValueError(
                f"image: a PIL image of format {image.format} not decoded yet; the kit decodes only {FORMAT_NAMES} "
                "(other formats may run other programs): convert it yourself if you trust it, e.g. "
                "image.convert('RGB')"
            )
        return _to_rgb(image, max_edge)
    if not isinstance(image, (str, os.PathLike)):
        raise TypeError(f"image must be a file path or a PIL.Image.Image, got {type(image).__name__}")
    path = Path(image)
    if not path.is_file():
        raise FileNotFoundError(f"image: no such file {str(path)!r}")
    with path.open("rb") as file, _pixel_limit_lifted():
        try:
            img = Image.open(file, formats=ALLOWED_FORMATS)
            _check_size(img, path, max_edge)
            img.load()
            return _to_rgb(img, max_edge)
        except UnidentifiedImageError:
            raise ValueError(
                f"image: {str(path)!r} is not an image file in a format the kit reads ({FORMAT_NAMES}; judged by "
                "its content, not its name)"
            ) from None
        except Image.DecompressionBombError as err:  # Pillow's own limit (a GIF frame, or its limit set lower)
            raise ValueError(f"image: {str(path)!r} is too large to open safely ({err})") from None
        except OSError as err:
            raise ValueError(f"image: {str(path)!r} could not be decoded ({err})") from None


@contextlib.contextmanager
def _pixel_limit_lifted() -> Iterator[None]:
    """Let ``_check_size`` judge sizes instead of Pillow's global limit (which would refuse a 200-megapixel JPEG
    photo that draft mode decodes at 1/8 scale), and restore the limit afterwards."""
    with _PIL_LIMIT:
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                yield
        finally:
            Image.MAX_IMAGE_PIXELS = previous


def _check_size(img: Image.Image, path: Path, max_edge: int) -> None:
    """Choose JPEG's reduced decoding scale, then refuse what would still decode to too many pixels."""
    width, height = img.size
    if img.format == "JPEG" and width * height <= MAX_JPEG_PIXELS:
        img.draft("RGB", (max_edge, max_edge))  # decode at 1/2, 1/4 or 1/8 scale; changes img.size
    if img.size[0] * img.size[1] > MAX_DECODED_PIXELS:
        raise ValueError(
            f"image: {str(path)!r} is {width} x {height} pixels ({width * height / 1e6:.0f} megapixels), too large "
            f"to open safely: the kit decodes at most {MAX_DECODED_PIXELS // 10**6} megapixels "
            f"({MAX_JPEG_PIXELS // 10**6} for a JPEG, read at reduced scale) and shrinks every image to "
            f"{MAX_IMAGE_EDGE} px anyway; shrink it first, or save it as JPEG"
        )


def _to_rgb(img: Image.Image, max_edge: int = MAX_IMAGE_EDGE) -> Image.Image:
    """``img`` as an RGB image no larger than ``max_edge``, as a viewer shows it; never changes ``img`` itself.

    The order saves memory: a mode of few bytes per pixel is shrunk before it becomes RGB.
    """
    orientation = img.getexif().get(0x0112, 1)  # EXIF Orientation: 1 is upright
    out = _viewable(img)
    if max(out.size) > max_edge:
        out = out.copy() if out is img else out
        out.thumbnail((max_edge, max_edge), Image.Resampling.LANCZOS)
    if out.mode == "RGBA":
        out = Image.alpha_composite(Image.new("RGBA", out.size, WHITE), out)
    if out.mode != "RGB":
        out = out.convert("RGB")
    if orientation != 1:
        exif = Image.Exif()
        exif[0x0112] = orientation
        out.info["exif"] = exif.tobytes()
        out = ImageOps.exif_transpose(out)
    return out


def _viewable(img: Image.Image) -> Image.Image:
    """``img`` in L, RGB or RGBA (or ``img`` itself when already in one without hidden transparency).

    Pillow's own ``convert`` clips 16-bit values to 8 bits (all white above 255 of 65535) and drops alpha (what
    transparent pixels store shows, often black); a palette's transparency needs RGBA.
    """
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        levels = np.asarray(img, dtype=np.int64)  # 16-bit grayscale: 65535 is white
        return Image.fromarray(((np.clip(levels, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8))
    if img.mode == "F":
        levels = np.asarray(img, dtype=np.float64)  # float grayscale: 0..1 when it fits, else 0..255
        scale = 255.0 if np.nanmax(levels, initial=0.0) <= 1.0 else 1.0
        return Image.fromarray(np.clip(np.nan_to_num(levels * scale), 0, 255).round().astype(np.uint8))
    if img.mode == "1":
        return img.convert("L")
    transparent = "transparency" in img.info or img.mode in ("LA", "La", "PA", "RGBa")
    if transparent and img.mode != "RGBA":
        return img.convert("RGBA")
    if img.mode in ("L", "RGB", "RGBA"):
        return img
    return img.convert("RGB")
