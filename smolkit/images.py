"""Opening images safely for the vision-language models: path or PIL image in, bounded RGB PIL image out."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, UnidentifiedImageError

__all__ = ["MAX_IMAGE_EDGE", "load_image"]

MAX_IMAGE_EDGE = 2048
"""Longest edge kept: SmolVLM's processor upsamples to 2048 px at most, so larger images only cost memory."""

# PIL refuses images above twice this many pixels as "decompression bombs"; a 100-megapixel photo is still a
# photo, and we shrink it at once, so we allow up to ~400 MP instead of PIL's ~179 MP.
_MAX_PIXELS = 200_000_000


def load_image(image: str | os.PathLike | Image.Image, max_edge: int = MAX_IMAGE_EDGE) -> Image.Image:
    """Open ``image`` (a path or a PIL image) as RGB, shrunk so its longest edge is at most ``max_edge`` pixels.

    Raises FileNotFoundError for a missing path and ValueError for a file that is not an image, before any model
    work. Shrinking happens while decoding where the format allows (JPEG draft mode), so a huge photo does not
    need its full size in memory.
    """
    if isinstance(max_edge, bool) or not isinstance(max_edge, int) or max_edge < 1:
        raise ValueError(f"max_edge must be a positive integer, got {max_edge!r}")
    if isinstance(image, Image.Image):
        img = image
    elif isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"image: no such file {str(path)!r}")
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = _MAX_PIXELS
        try:
            img = Image.open(path)
            img.draft("RGB", (max_edge, max_edge))  # JPEG: decode at a reduced scale; no-op for other formats
            img.load()
        except UnidentifiedImageError:
            raise ValueError(f"image: {str(path)!r} is not an image file PIL can read (PNG, JPEG, WebP, ...)") from None
        except Image.DecompressionBombError as err:
            raise ValueError(f"image: {str(path)!r} is too large to open safely ({err})") from None
        except OSError as err:
            raise ValueError(f"image: {str(path)!r} could not be decoded ({err})") from None
        finally:
            Image.MAX_IMAGE_PIXELS = previous
    else:
        raise TypeError(f"image must be a file path or a PIL.Image.Image, got {type(image).__name__}")
    if img.mode != "RGB":
        img = img.convert("RGB")
    if max(img.size) > max_edge:
        img = img.copy() if img is image else img
        img.thumbnail((max_edge, max_edge), Image.Resampling.LANCZOS)
    return img
