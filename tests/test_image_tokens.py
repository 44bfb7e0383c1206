"""image_tokens: SmolVLM's tiles and image tokens from transformers' own processor with SmolVLM-256M's settings."""

from __future__ import annotations

import math

import pytest

from smolkit import sample_image
from smolkit.image_tokens import SMOLVLM_256M, image_prompt, image_token_rows, prefill_seconds, smolvlm_processor


def expected_tiles(width: int, height: int, edge: int, tile: int) -> int:
    """Idefics3's rule: longest edge resized to ``edge`` (aspect kept), each side rounded up to whole tiles, plus a
    global view when there is more than one tile."""
    scale = edge / max(width, height)
    grid = math.ceil(width * scale / tile) * math.ceil(height * scale / tile)
    return grid + 1 if grid > 1 else 1


def test_the_settings_agree_with_each_other():
    per_tile = (SMOLVLM_256M["tile"] // SMOLVLM_256M["patch"]) ** 2 // SMOLVLM_256M["scale_factor"] ** 2
    assert per_tile == SMOLVLM_256M["image_seq_len"] == 64


@pytest.mark.parametrize("edge", [512, 1024, 2048])
def test_counts_follow_the_tiling_rule(edge):
    image = sample_image("red_ball")
    row = image_token_rows(image, [edge])[0]
    tiles = 1 if edge == SMOLVLM_256M["tile"] else expected_tiles(*image.size, edge, SMOLVLM_256M["tile"])
    assert row["tiles"] == tiles
    assert row["image tokens"] == 64 * tiles
    assert row["prompt tokens"] > row["image tokens"]
    assert row["of the context"] == pytest.approx(row["prompt tokens"] / 8192)


def test_the_prompt_shows_where_each_tile_sits():
    prompt = image_prompt(sample_image("shapes"), "What shapes are there?", longest_edge=1024)
    assert prompt.count("<image>x64") == 5
    assert "<row_2_col_2>" in prompt and "<global-img>" in prompt and "What shapes are there?" in prompt
    assert image_prompt(sample_image("shapes"), longest_edge=512).count("<image>x64") == 1


def test_a_loaded_models_processor_is_used_and_left_alone(tiny_vlm):
    processor = tiny_vlm.processor.image_processor
    before = dict(processor.size)
    rows = image_token_rows(sample_image("landscape"), [64, 128, 256], lm=tiny_vlm)
    per_tile = rows[0]["image tokens"]
    assert [r["tiles"] for r in rows] == [1, 5, 13]
    assert [r["image tokens"] for r in rows] == [per_tile * t for t in (1, 5, 13)]
    assert dict(processor.size) == before


def test_bad_values_name_the_input(lm):
    with pytest.raises(ValueError, match="longest_edge"):
        smolvlm_processor(100)
    with pytest.raises(ValueError, match="tokens"):
        prefill_seconds(lm, 0)
    assert prefill_seconds(lm, 8, repeats=1) > 0


def test_sizes_beyond_the_processor_and_text_models_are_refused(lm, monkeypatch):
    """Idefics3's processor resizes to at most 4,096 px: 8,192 and 16,384 would label rows with sizes it never
    used. A text-only model as lm is named as such (it was an AttributeError). Both before any image work."""
    import smolkit.image_tokens as image_tokens

    def refuse(*args):
        raise AssertionError("an image was processed")

    monkeypatch.setattr(image_tokens, "_encode", refuse)
    image = sample_image("red_ball")
    with pytest.raises(ValueError, match=r"^longest_edges must be in \[512, 4096\] .*at most 4096 px.*, got 8192"):
        image_token_rows(image, (4096, 8192, 16384))
    with pytest.raises(ValueError, match=r"^longest_edge must be in \[512, 4096\]"):
        smolvlm_processor(5000)
    with pytest.raises(TypeError, match=r"^lm must be a SmolVLM model .*got the text-only model 'embedded'"):
        image_token_rows(image, (512,), lm=lm)
    with pytest.raises(TypeError, match=r"^lm must be a SmolVLM model .*got str"):
        image_token_rows(image, (512,), lm="SmolVLM")
