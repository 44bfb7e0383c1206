"""Test plumbing: a tiny, randomly initialised Idefics3 (SmolVLM's architecture) built locally, the
chi-square statistic the GPU tests and benchmarks hold draws against a distribution with, and the loader that
imports the repository's scripts (bench/, environment/, workshop/: folders, not packages) in tests.

SmolVLM cannot be downloaded in tests or CI, so the image path (processor, image splitting, generate with
pixel_values) is tested on this stand-in. Its weights are random: it is never a real model and its text is noise.
Not part of the public API.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from smolkit.image_tokens import SMOLVLM_CHAT_TEMPLATE, smolvlm_tokenizer


def load_script(path: str | Path, name: str | None = None) -> ModuleType:
    """The script at ``path`` imported as the module ``name`` (default: the file's stem) and registered in
    ``sys.modules`` under it, as an import would (dataclasses and pickle look a class's module up there)."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(name or path.stem, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"path must be a Python file, got {str(path)!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def chi_square(counts: torch.Tensor, probs: torch.Tensor, bins: int = 20) -> float:
    """Pearson's chi-square of token ``counts`` (vocab,) against ``probs`` (vocab,) over the ``bins`` most likely
    tokens and one bin for all the others (``bins`` degrees of freedom).

    >>> round(chi_square(torch.tensor([50.0, 30.0, 20.0]), torch.tensor([0.5, 0.3, 0.2]), bins=2), 6)
    0.0
    >>> round(chi_square(torch.tensor([60.0, 20.0, 20.0]), torch.tensor([0.5, 0.3, 0.2]), bins=2), 3)
    5.333
    """
    top = torch.topk(probs, bins).indices
    expected = torch.cat([probs[top], (1 - probs[top].sum()).clamp(min=0).view(1)]).double() * counts.sum()
    observed = torch.cat([counts[top], (counts.sum() - counts[top].sum()).view(1)]).double()
    keep = expected > 0
    return float(((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum())


def build_tiny_idefics3(folder: str | Path, tile: int = 64, patch: int = 16, seed: int = 0) -> Path:
    """Write a tiny random Idefics3 model, processor and tokenizer to ``folder`` and return it.

    The tokenizer is the embedded SmolLM2 one plus SmolVLM's image special tokens; the image processor is the PIL
    one (no torchvision). One tile of ``tile`` px gives ``(tile / patch) ** 2 / 4`` image tokens (scale factor 2);
    images up to ``4 * tile`` px are split into tiles plus a global image, as SmolVLM does.
    """
    from transformers import Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = smolvlm_tokenizer()

    scale = 2
    image_seq_len = (tile // patch) ** 2 // scale**2
    config = _tiny_config(tokenizer, tile, patch, scale)
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<end_of_utterance>")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(str(folder), safe_serialization=True)

    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": 4 * tile}, max_image_size={"longest_edge": tile}, do_image_splitting=True
    )
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=image_seq_len,
        chat_template=SMOLVLM_CHAT_TEMPLATE,
    )
    processor.save_pretrained(str(folder))
    (folder / "SMOLKIT_TEST_MODEL.json").write_text(
        json.dumps({"what": "tiny random Idefics3 for tests; not a real model", "image_seq_len": image_seq_len})
    )
    return folder


def _tiny_config(tokenizer: Any, tile: int, patch: int, scale: int) -> Any:
    """An Idefics3 config a few layers wide: a Llama text decoder (the fast path's architecture) and a SigLIP tower."""
    from transformers import Idefics3Config

    text = dict(model_type="llama", vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=tile,
                  patch_size=patch)  # fmt: skip
    return Idefics3Config(
        text_config=text,
        vision_config=vision,
        scale_factor=scale,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        tie_word_embeddings=True,
    )
