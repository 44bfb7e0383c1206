"""load_image: missing files, non-images and huge images get clear answers before any model work."""

from __future__ import annotations

import pytest
from PIL import Image

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
