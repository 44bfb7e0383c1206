"""load_image: missing files, non-images and huge images get clear answers before any model work; every mode and
orientation reaches the model as an image viewer shows it; only the formats the kit means are decoded."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from smolkit.images import MAX_IMAGE_EDGE, load_image


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_image(tmp_path / "nope.png")


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is text, not a picture")
    with pytest.raises(ValueError, match="is not an image file"):
        load_image(path)


def test_wrong_type():
    with pytest.raises(TypeError, match=r"file path or a PIL\.Image\.Image"):
        load_image(42)


def test_huge_image_is_shrunk_not_loaded_whole(tmp_path):
    path = tmp_path / "huge.jpg"
    Image.new("RGB", (12000, 9000), "green").save(path, quality=50)
    img = load_image(path)
    assert max(img.size) <= MAX_IMAGE_EDGE and img.mode == "RGB"
    assert img.size[0] / img.size[1] == pytest.approx(12000 / 9000, rel=0.01)


def test_modes_become_rgb_and_small_images_are_kept():
    gray = Image.new("L", (40, 30), 128)
    img = load_image(gray)
    assert img.mode == "RGB" and img.size == (40, 30)
    rgba = Image.new("RGBA", (5000, 100))
    out = load_image(rgba)
    assert out.size == (MAX_IMAGE_EDGE, 41) and rgba.size == (5000, 100)  # the caller's image is untouched


# -- issue 17, item 2: every mode reaches the model as it looks --------------------------------------------------


def _saved(tmp_path, img: Image.Image, name: str, **kwargs) -> Path:
    path = tmp_path / name
    img.save(path, **kwargs)
    return path


def test_16_bit_grayscale_keeps_its_shades(tmp_path):
    """A 16-bit PNG (mode I;16) was clipped to 8 bits: everything above 255 of 65535 became white."""
    levels = np.zeros((20, 40), dtype=np.uint16)
    levels[:, 20:] = 0xC000  # left: black; right: 75% gray
    levels[:10, :20] = 0x4000  # top left: 25% gray
    path = _saved(tmp_path, Image.fromarray(levels), "gray16.png")
    assert Image.open(path).mode == "I;16"
    out = np.asarray(load_image(path))
    assert out.shape == (20, 40, 3)
    assert tuple(out[15, 5]) == (0, 0, 0) and tuple(out[5, 5]) == (64, 64, 64) and tuple(out[5, 30]) == (191,) * 3


def test_black_text_on_a_transparent_background_stays_readable(tmp_path):
    """Transparent pixels of an RGBA image often store black: dropping the alpha made the whole image black."""
    img = Image.new("RGBA", (40, 20), (0, 0, 0, 0))
    ImageDraw.Draw(img).rectangle((5, 5, 14, 14), fill=(0, 0, 0, 255))  # the "text"
    img.putpixel((30, 10), (0, 0, 0, 128))  # half-transparent black over white: mid gray
    out = np.asarray(load_image(_saved(tmp_path, img, "text.png")))
    assert tuple(out[0, 0]) == (255, 255, 255) and tuple(out[10, 10]) == (0, 0, 0)
    assert tuple(out[10, 30]) == (127, 127, 127)


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_transparency_shows_white_not_the_stored_colour(tmp_path, fmt):
    img = Image.new("P", (40, 20), 0)
    img.putpalette([0, 200, 0, 200, 0, 0] + [0, 0, 0] * 254)  # index 0: green (transparent), 1: red
    ImageDraw.Draw(img).rectangle((20, 0, 39, 19), fill=1)
    path = _saved(tmp_path, img, f"palette.{fmt.lower()}", transparency=0)
    out = np.asarray(load_image(path))
    assert tuple(out[10, 5]) == (255, 255, 255) and tuple(out[10, 30]) == (200, 0, 0)


def test_gray_with_alpha_is_flattened_on_white(tmp_path):
    img = Image.new("LA", (10, 10), (0, 0))
    img.putpixel((5, 5), (0, 255))
    out = np.asarray(load_image(_saved(tmp_path, img, "la.png")))
    assert tuple(out[0, 0]) == (255, 255, 255) and tuple(out[5, 5]) == (0, 0, 0)


def test_transparency_is_flattened_also_when_shrunk():
    img = Image.new("RGBA", (5000, 100), (0, 0, 0, 0))
    out = load_image(img)
    assert out.size == (MAX_IMAGE_EDGE, 41) and np.asarray(out).min() == 255


def _oriented_jpeg(tmp_path) -> Path:
    """A 60x30 JPEG, left half red and right half blue, tagged EXIF Orientation 6: shown rotated 90 degrees
    clockwise, 30 wide and 60 high, red on top (what a phone held upright writes)."""
    img = Image.new("RGB", (60, 30), (220, 0, 0))
    img.paste((0, 0, 220), (30, 0, 60, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    return _saved(tmp_path, img, "phone.jpg", exif=exif, quality=95)


def _is_red(pixel) -> bool:
    return pixel[0] > 150 and pixel[2] < 80


def test_jpeg_exif_orientation_is_applied(tmp_path):
    path = _oriented_jpeg(tmp_path)
    out = load_image(path)
    assert out.size == (30, 60)
    assert _is_red(out.getpixel((15, 5))) and not _is_red(out.getpixel((15, 55)))
    opened = load_image(Image.open(path))  # an image the caller opened: the same picture
    assert opened.size == (30, 60) and _is_red(opened.getpixel((15, 5)))


# -- issue 17, item 13: only the formats the kit means, decided by content -------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"])
def test_the_formats_the_kit_reads_load_whatever_their_name(tmp_path, fmt):
    path = _saved(tmp_path, Image.new("RGB", (16, 12), (0, 90, 200)), "picture.dat", format=fmt)
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (16, 12)


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto 10 10 lineto stroke\nshowpage\n"


def test_postscript_never_reaches_ghostscript(tmp_path, monkeypatch):
    """An EPS named photo.png was identified by its content and rendered by running Ghostscript on it."""
    from PIL import EpsImagePlugin

    ran = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: ran.append(a) or pytest.fail("Ghostscript"))
    path = tmp_path / "photo.png"
    path.write_bytes(EPS)
    with pytest.raises(ValueError, match=r"photo\.png.*is not an image file.*PNG, JPEG, WebP, GIF, BMP, TIFF"):
        load_image(path)
    assert ran == []


@pytest.mark.parametrize("fmt", ["PPM", "ICO", "PCX", "EPS-as-PIL"])
def test_other_formats_are_refused_clearly(tmp_path, fmt, monkeypatch):
    if fmt == "EPS-as-PIL":  # an image the caller opened but that is not decoded yet: decoding would run Ghostscript
        from PIL import EpsImagePlugin

        monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: pytest.fail("Ghostscript"))
        (tmp_path / "x.eps").write_bytes(EPS)
        with pytest.raises(ValueError, match=r"format EPS.*PNG, JPEG, WebP, GIF, BMP, TIFF"):
            load_image(Image.open(tmp_path / "x.eps"))
        return
    path = _saved(tmp_path, Image.new("RGB", (16, 16), "red"), "photo.png", format=fmt)
    with pytest.raises(ValueError, match=r"is not an image file.*PNG, JPEG, WebP, GIF, BMP, TIFF.*content"):
        load_image(path)


# -- issue 17, item 16: no file left open, no giant decode -------------------------------------------------------


def _open_descriptors(path: Path) -> int:
    fds = Path("/proc/self/fd")
    return sum(1 for fd in fds.iterdir() if os.path.realpath(fd) == str(path.resolve()))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts open files through Linux's /proc")
def test_a_failed_load_leaves_no_file_open(tmp_path):
    whole = _saved(tmp_path, Image.effect_noise((200, 200), 50).convert("RGB"), "whole.png")
    cut = tmp_path / "cut.png"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(ValueError, match="could not be decoded") as info:
        load_image(cut)
    assert _open_descriptors(cut) == 0, info.value  # while the error is still held, as in a notebook's traceback
    assert load_image(whole).size == (200, 200) and _open_descriptors(whole) == 0


def _one_bit_png(width: int, height: int) -> bytes:
    """A real, white 1-bit PNG of ``width`` x ``height`` pixels (a few hundred KB for hundreds of megapixels)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + b"\xff" * ((width + 7) // 8)
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def test_a_giant_png_is_refused_before_decoding(tmp_path, monkeypatch):
    """A 399-megapixel 1-bit PNG took 5.8 s and 2.2 GB to decode, only to be shrunk to 2048 px."""
    from PIL import ImageFile

    path = tmp_path / "scan.png"
    path.write_bytes(_one_bit_png(19_975, 19_975))
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("the giant image was decoded"))
    with pytest.raises(ValueError, match=r"scan\.png.*19975 x 19975 pixels \(399 megapixels\).*too large"):
        load_image(path)
