"""sample_images: the kit's own pictures are drawn deterministically and shipped as the same PNGs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from smolkit.sample_images import DATA_DIR, SAMPLE_IMAGES, draw, sample_image, sample_image_path, save_sample_images


@pytest.mark.parametrize("name", sorted(SAMPLE_IMAGES))
def test_drawing_is_deterministic_and_matches_the_shipped_png(name):
    first, second = np.asarray(draw(name)), np.asarray(draw(name))
    assert first.shape == (360, 480, 3)
    assert np.array_equal(first, second)
    shipped = sample_image_path(name)
    assert shipped.parent == DATA_DIR and shipped.is_file()
    assert np.array_equal(np.asarray(Image.open(shipped).convert("RGB")), first)


def test_sample_image_loads_rgb_and_images_differ():
    images = {name: np.asarray(sample_image(name)) for name in SAMPLE_IMAGES}
    assert all(sample_image(name).mode == "RGB" for name in SAMPLE_IMAGES)
    names = sorted(images)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not np.array_equal(images[a], images[b]), (a, b)
    ball = images["red_ball"]
    assert tuple(ball[230, 240]) == (210, 30, 30)  # the middle of the ball is red
    assert ball[10, 10, 2] > ball[10, 10, 0]  # blue sky at the top
    assert ball[350, 10, 1] > ball[350, 10, 0]  # green grass at the bottom


def test_save_sample_images_writes_every_png(tmp_path):
    paths = save_sample_images(tmp_path)
    assert sorted(p.stem for p in paths) == sorted(SAMPLE_IMAGES)
    for path in paths:
        assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), np.asarray(draw(path.stem)))


def test_unknown_name_is_refused():
    with pytest.raises(ValueError, match="sample image must be one of"):
        draw("cat")
    with pytest.raises(ValueError, match="sample image must be one of"):
        sample_image("cat")
