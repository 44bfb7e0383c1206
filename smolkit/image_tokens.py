"""How SmolVLM turns a picture into tokens, computed with transformers' own Idefics3 processor and SmolVLM-256M's
real settings: no weights needed.

SmolVLM (Idefics3's architecture) resizes an image so that its longest edge is ``longest_edge`` pixels, cuts it
into square tiles of ``tile`` pixels (plus the whole image shrunk to one tile, the "global" view, when there is
more than one tile), and turns each tile into ``image_seq_len`` image tokens in the prompt, between markers that
say where the tile sits (``<row_1_col_2>``). Every image token is a position the language model reads, like a
word: it fills the context and costs time in every forward pass.
"""

from __future__ import annotations

import copy
import functools
import re
import time
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from smolkit import _checks
from smolkit.images import load_image
from smolkit.models import LoadedModel

__all__ = [
    "IMAGE_SPECIAL_TOKENS",
    "SMOLVLM_256M",
    "SMOLVLM_CHAT_TEMPLATE",
    "image_prompt",
    "image_token_rows",
    "prefill_seconds",
    "smolvlm_processor",
    "smolvlm_tokenizer",
]

SMOLVLM_256M: dict[str, Any] = {
    "model": "HuggingFaceTB/SmolVLM-256M-Instruct",
    "longest_edge": 2048,
    "tile": 512,
    "image_seq_len": 64,
    "patch": 16,
    "scale_factor": 4,
    "context": 8192,
}
"""SmolVLM-256M-Instruct's image settings, as its Hub repository ships them: ``preprocessor_config.json``
(``size.longest_edge`` 2048, ``max_image_size.longest_edge`` 512, ``do_image_splitting`` true),
``processor_config.json`` (``image_seq_len`` 64) and ``config.json`` (the SigLIP vision tower's ``patch_size``
16 on 512 px tiles, ``scale_factor`` 4, and the text model's ``max_position_embeddings`` 8192). They agree with each
other: (512 / 16) ** 2 = 1,024 patches per tile, merged 4 x 4 into 64 tokens. SmolVLM-500M uses the same."""

SMOLVLM_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
"""SmolVLM's chat template (the format of its chat_template.json): "User:<image>text<end_of_utterance>\\nAssistant:"."""

IMAGE_SPECIAL_TOKENS = [
    "<fake_token_around_image>",
    "<image>",
    "<end_of_utterance>",
    "<global-img>",
    *[f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)],
]
"""The special tokens SmolVLM's tokenizer adds to SmolLM2's for images and chat turns."""


@functools.cache
def smolvlm_tokenizer() -> Any:
    """SmolLM2's tokenizer (the embedded model's, which SmolVLM's text side shares) plus SmolVLM's image special
    tokens, end of utterance as its end of sequence. Built once; a new object, the embedded model's is untouched."""
    from transformers import AutoTokenizer

    from smolkit.embedded import ensure_converted

    tokenizer = AutoTokenizer.from_pretrained(str(ensure_converted()), trust_remote_code=False)
    tokenizer.add_special_tokens({"additional_special_tokens": IMAGE_SPECIAL_TOKENS})
    tokenizer.add_special_tokens({"eos_token": "<end_of_utterance>"})
    return tokenizer


def smolvlm_processor(
    longest_edge: int | None = None, splitting: bool = True, settings: dict[str, Any] = SMOLVLM_256M
) -> Any:
    """transformers' Idefics3Processor with ``settings`` (SmolVLM-256M's by default): the real image logic of
    SmolVLM, without its weights. ``longest_edge`` replaces the resize target, ``splitting=False`` reads the image
    as one tile (what the kit does on the CPU)."""
    from transformers import Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    edge = settings["longest_edge"] if longest_edge is None else longest_edge
    edge = _edge("longest_edge", edge, settings["tile"])
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": edge},
        max_image_size={"longest_edge": settings["tile"]},
        do_image_splitting=_checks.boolean("splitting", splitting),
    )
    return Idefics3Processor(image_processor=image_processor, tokenizer=smolvlm_tokenizer(),
                             image_seq_len=settings["image_seq_len"], chat_template=SMOLVLM_CHAT_TEMPLATE)  # fmt: skip


def _edge(name: str, value: Any, tile: int) -> int:
    """A resize target: at least one tile, at most what Idefics3's processor resizes to (it caps the longest edge
    at its MAX_IMAGE_SIZE, 4,096 px: a larger target would be a row labelled with a size never used)."""
    from transformers.models.idefics3.image_processing_pil_idefics3 import MAX_IMAGE_SIZE

    return _checks.integer(name, value, lo=tile, hi=MAX_IMAGE_SIZE,
                           note=f"at least one {tile} px tile; the processor resizes to at most {MAX_IMAGE_SIZE} px")


def _vision_model(lm: Any) -> LoadedModel:
    """``lm`` when it is a vision-language model from ``load_model``; TypeError otherwise."""
    if not isinstance(lm, LoadedModel) or not lm.is_vision:
        what = f"the text-only model {lm.name!r}" if isinstance(lm, LoadedModel) else type(lm).__name__
        raise TypeError(f"lm must be a SmolVLM model from smolkit.load_model (one that reads images), or None for "
                        f"SmolVLM-256M's settings, got {what}")
    return lm


def _with_edge(processor: Any, longest_edge: int, splitting: bool) -> Any:
    """A copy of a loaded model's processor with another resize target (the model's own one is untouched)."""
    processor = copy.copy(processor)
    processor.image_processor = copy.deepcopy(processor.image_processor)
    processor.image_processor.size = {"longest_edge": longest_edge}
    processor.image_processor.do_image_splitting = splitting
    return processor


def _encode(processor: Any, image: Any, question: str) -> dict[str, Any]:
    content = [{"type": "image"}, {"type": "text", "text": question}]
    text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    return processor(text=text, images=[load_image(image)], return_tensors="pt")


def image_token_rows(
    image: Any,
    longest_edges: Sequence[int] = (512, 1024, 2048),
    question: str = "Describe this image in one sentence.",
    lm: LoadedModel | None = None,
) -> list[dict[str, Any]]:
    """For each resize target: the tiles the image becomes (the global view included), its image tokens, the
    whole prompt's tokens and their share of the context. SmolVLM-256M's settings, or the processor of ``lm``
    (a SmolVLM loaded with ``smolkit.load_model``) when given. A 512 px target is read as a single tile."""
    _checks.text("question", question)
    lm = None if lm is None else _vision_model(lm)
    context = SMOLVLM_256M["context"] if lm is None else lm.context_length
    tile = SMOLVLM_256M["tile"] if lm is None else lm.processor.image_processor.max_image_size["longest_edge"]
    if isinstance(longest_edges, (str, bytes)) or not isinstance(longest_edges, Iterable):
        raise TypeError(f"longest_edges must be a list of sizes in px, got {_checks.describe(longest_edges)}")
    edges = [_edge("longest_edges", edge, tile) for edge in longest_edges]  # all checked before any image work
    rows = []
    for edge in edges:
        splitting = edge > tile
        processor = smolvlm_processor(edge, splitting) if lm is None else _with_edge(lm.processor, edge, splitting)
        batch = _encode(processor, image, question)
        image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
        ids = batch["input_ids"][0]
        rows.append({"longest edge": edge, "tiles": int(batch["pixel_values"].shape[1]),
                     "image tokens": int((ids == image_id).sum()), "prompt tokens": int(ids.numel()),
                     "of the context": ids.numel() / context})  # fmt: skip
    return rows


def image_prompt(image: Any, question: str = "Describe this image in one sentence.", longest_edge: int = 512) -> str:
    """The prompt SmolVLM reads for ``image`` and ``question`` (SmolVLM-256M's settings), each run of ``<image>``
    tokens written once with its count (``<image>x64``)."""
    processor = smolvlm_processor(longest_edge, splitting=longest_edge > SMOLVLM_256M["tile"])
    text = processor.tokenizer.decode(_encode(processor, image, question)["input_ids"][0])
    return re.sub(r"(?:<image>)+", lambda m: f"<image>x{m.group(0).count('<image>')}", text)


@torch.inference_mode()
def prefill_seconds(lm: LoadedModel, tokens: int, repeats: int = 3) -> float:
    """The fastest of ``repeats`` forward passes of ``lm`` over a prompt of ``tokens`` tokens: what reading a
    prompt that long costs before the first new token (the embedded model has the shape of SmolVLM-256M's text
    model, so this is its decoder's share; the vision tower runs once per tile on top)."""
    tokens = _checks.integer("tokens", tokens, lo=1, hi=lm.context_length)
    ids = torch.full((1, tokens), lm.pad_token_id or 0, dtype=torch.long, device=lm.device)
    best = float("inf")
    for _ in range(_checks.integer("repeats", repeats, lo=1)):
        start = time.perf_counter()
        lm.model(input_ids=ids, use_cache=False, logits_to_keep=1)
        best = min(best, time.perf_counter() - start)
    return best
