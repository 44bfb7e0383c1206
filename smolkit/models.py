"""Loading models: the embedded SmolLM2 (offline) and SmolVLM / SmolLM2 from the Hugging Face cache or a folder.

``load_model("embedded")`` needs no network: it reads SmolLM2-135M-Instruct from the kit's converted cache
(``smolkit.embedded``). SmolVLM's own text decoder was initialised from SmolLM2 and trained further, so the
embedded model teaches the same parameters on the same vocabulary (SmolVLM's adds tokens that mark images), but it
is not SmolVLM's decoder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from smolkit import _checks, gpu_seats, gpu_share
from smolkit.compat import require_supported_transformers, vision_problem
from smolkit.embedded import EMBEDDED_DESCRIPTION, ensure_converted
from smolkit.hub_download import download_problem
from smolkit.images import load_image

__all__ = [
    "EMBEDDED",
    "SMOLVLM_MODELS",
    "LoadedModel",
    "load_model",
    "resolve_device",
    "resolve_dtype",
]

EMBEDDED = "embedded"

SMOLVLM_MODELS = (
    "HuggingFaceTB/SmolVLM-256M-Instruct",
    "HuggingFaceTB/SmolVLM-500M-Instruct",
    "HuggingFaceTB/SmolVLM-Instruct",
)
"""SmolVLM v1 checkpoints (Idefics3 architecture) the kit knows; any Hub id or local folder also works."""

CPU_IMAGE_TILE = 512  # one 512 px tile = 64 image tokens for SmolVLM-256M/500M


# -- devices and dtypes ------------------------------------------------------------------------------------------


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU. Asking for CUDA without it raises ValueError."""
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise TypeError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only"
            raise ValueError(
                f"device={device!r}: CUDA is not available (torch {torch.__version__} is a {build} build or no GPU "
                "is visible); use device='cpu' or 'auto', or install the GPU recipe: make lab TORCH=cu126"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif dev.type != "cpu":
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return dev


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """'auto' -> float32 on every device: the kit shows next-token probabilities, and in bfloat16 two correct
    implementations of the same model (transformers' forward, the fast path's) give probabilities a few per cent
    apart, enough for a chi-square test to tell the plot from the draws. SmolLM2 and SmolVLM are small enough that
    float32 costs little (bench/RESULTS.md). "bfloat16" and "float16" remain available for speed."""
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES.values():
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)} or 'auto', got {dtype}")
        return dtype
    if dtype == "auto":
        return torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)} or 'auto', got {dtype!r}")
    return _DTYPES[dtype]


# -- the loaded model --------------------------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class LoadedModel:
    """A model ready for the kit: the transformers model, its tokenizer, its processor (None for text-only).

    Also holds an explicit cache of next-token logits per input (see ``smolkit.distribution``), cleared by
    ``clear_cache()``.
    """

    model: Any
    tokenizer: Any
    processor: Any | None
    device: torch.device
    name: str
    dtype: torch.dtype
    description: str = ""
    load_seconds: float = 0.0
    fast_decoder: Any = dataclasses.field(default=None, repr=False)
    fast_path_notice_shown: bool = dataclasses.field(default=False, repr=False)
    token_text_cache: dict[int, str] = dataclasses.field(default_factory=dict, repr=False)
    logits_cache: OrderedDict = dataclasses.field(default_factory=OrderedDict, repr=False)

    @property
    def is_vision(self) -> bool:
        """True for a vision-language model (SmolVLM), which accepts images."""
        return self.processor is not None

    @property
    def vocab_size(self) -> int:
        """Size of the logits vector (may exceed len(tokenizer) by padding rows)."""
        return int(self.model.get_output_embeddings().weight.shape[0])

    @property
    def context_length(self) -> int:
        """Most tokens (prompt + generated) the model's positions support."""
        return int(self.model.config.get_text_config().max_position_embeddings)

    @property
    def eos_token_ids(self) -> list[int]:
        """The model's end-of-sequence ids: its generation config's, else the tokenizer's."""
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        if eos is None:
            return []
        return [eos] if isinstance(eos, int) else list(eos)

    @property
    def pad_token_id(self) -> int | None:
        pad = self.model.generation_config.pad_token_id
        if pad is None:
            pad = self.tokenizer.pad_token_id
        if pad is None and self.eos_token_ids:
            pad = self.eos_token_ids[0]
        return pad

    def clear_cache(self) -> None:
        """Forget cached next-token logits."""
        self.logits_cache.clear()

    def inputs(self, prompt: str, chat: bool = True, image: Any = None) -> dict[str, torch.Tensor]:
        """Model inputs (input_ids, attention_mask, and pixel values with an image) on the model's device.

        ``chat=True`` wraps the prompt in the model's chat template as a user turn and adds the assistant prefix,
        which is what instruct models are trained on; ``chat=False`` feeds the text as it is.
        """
        _checks.text("prompt", prompt)
        chat = _checks.boolean("chat", chat)
        if image is not None and not self.is_vision:
            raise ValueError(
                f"image: model {self.name!r} is text-only and cannot read images; load a SmolVLM model, e.g. "
                f"load_model({SMOLVLM_MODELS[0]!r})"
            )
        if self.is_vision:
            pil = load_image(image) if image is not None else None
            if chat:
                content = ([{"type": "image"}] if pil is not None else []) + [{"type": "text", "text": prompt}]
                text = self.processor.apply_chat_template(
                    [{"role": "user", "content": content}], add_generation_prompt=True
                )
            else:
                text = ("<image>" if pil is not None else "") + prompt
            batch = self.processor(text=text, images=[pil] if pil is not None else None, return_tensors="pt")
        else:
            if chat:
                text = self.tokenizer.apply_chat_template(
                    [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
                )
            else:
                text = prompt
            batch = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)
        out = {k: v.to(self.device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
        if "pixel_values" in out:
            out["pixel_values"] = out["pixel_values"].to(self.dtype)
        return out

    def encode(self, prompt: str, chat: bool = True, image: Any = None) -> torch.Tensor:
        """Input ids, shape (1, length), for ``prompt`` (see ``inputs``)."""
        return self.inputs(prompt, chat=chat, image=image)["input_ids"]

    def decode(self, ids: Any, skip_special_tokens: bool = False) -> str:
        """Text of a sequence of token ids."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def token_text(self, token_id: int) -> str:
        """The text one token adds (e.g. ' Paris'), for display."""
        token_id = int(token_id)
        text = self.token_text_cache.get(token_id)
        return text if text is not None else self.token_texts([token_id])[0]

    def token_texts(self, token_ids: Sequence[int]) -> list[str]:
        """The text of each token, decoded in one batch and remembered (step records need thousands at once).

        A call costs in proportion to the ids asked, never to the cache: each id is looked up, not the cache
        compared as a whole (a set difference with the cache's keys visits every remembered entry).
        """
        ids = [int(i) for i in token_ids]
        cache = self.token_text_cache
        missing = [i for i in dict.fromkeys(ids) if i not in cache]
        if missing:
            cache.update(zip(missing, self.tokenizer.batch_decode([[i] for i in missing]), strict=True))
        return [cache[i] for i in ids]


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """Hide transformers' per-load progress bars (a second-long load needs none; notebooks stay clean)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _model_kwargs(device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """What every model load passes to ``from_pretrained`` besides ``trust_remote_code=False`` (said at each call):
    safetensors only, and the weights read straight onto ``device`` in ``dtype`` (``device_map``), so that no copy
    is made on the host first and no conversion happens when the file already holds ``dtype`` (the embedded cache
    is float32)."""
    return dict(dtype=dtype, device_map=device, use_safetensors=True)


EMBEDDED_KEY_MAPPING = {r"^lm_head\.weight$": "model.embed_tokens.weight"}
"""The embedded cache stores the tied embedding once, under ``lm_head.weight`` (safetensors' ``save_model`` keeps
that name). transformers then counts ``model.embed_tokens.weight`` as missing and initialises it (``normal_`` over
49,152 x 576 floats: 0.25 s on a 2-core CPU, ~1.1 s on the GPU machine) before tying it to ``lm_head``, which
overwrites it. Loading the stored tensor under the embedding's name makes nothing missing: the same tensor ends up in
both places (tests/test_models.py checks the state dict against the plain load), and nothing is initialised."""


def _load_embedded(device: torch.device, dtype: torch.dtype) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = ensure_converted()
    with _quiet_progress():
        tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(
            str(folder), key_mapping=EMBEDDED_KEY_MAPPING, trust_remote_code=False, **_model_kwargs(device, dtype)
        )
    return LoadedModel(model, tokenizer, None, device, EMBEDDED, dtype, EMBEDDED_DESCRIPTION)


# -- Hub models and local folders --------------------------------------------------------------------------------


def _not_available(name: str, reason: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"model {name!r} is not available: {reason}. To fetch it on a machine with internet access run "
        f"`hf download {name}` (it lands in the Hugging Face cache, ~/.cache/huggingface/hub, which you can copy "
        f"here). load_model('embedded') works offline."
    )


def _load_hub(name: str, device: torch.device, dtype: torch.dtype, image_splitting: bool | None) -> LoadedModel:
    from huggingface_hub import is_offline_mode
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        AutoProcessor,
        AutoTokenizer,
    )

    local_folder = Path(name).expanduser()
    is_folder = local_folder.is_dir()
    source = str(local_folder) if is_folder else name
    offline = is_offline_mode()
    try:
        config = AutoConfig.from_pretrained(source, local_files_only=True, trust_remote_code=False)
        local_only = True
    except (OSError, ValueError) as err:
        if is_folder:
            raise ValueError(f"model folder {source!r} holds no usable transformers config ({err})") from None
        if offline:
            raise _not_available(name, "it is not in the Hugging Face cache and HF_HUB_OFFLINE=1 is set") from None
        try:
            config = AutoConfig.from_pretrained(source, trust_remote_code=False)
        except (OSError, ValueError) as err2:
            raise _not_available(name, f"it is not cached and the Hub could not be reached ({err2})") from None
        local_only = False
    if is_folder:
        _check_weights(local_folder)
    elif local_only and (problem := download_problem(name)) is not None:  # an interrupted `hf download`
        if offline:
            raise _not_available(name, f"its download in the Hugging Face cache is incomplete: {problem}")
        local_only = False  # online: from_pretrained fetches what is missing

    kwargs = dict(**_model_kwargs(device, dtype), local_files_only=local_only, trust_remote_code=False)
    is_vision = hasattr(config, "vision_config")
    if is_vision and vision_problem() is not None:
        raise RuntimeError(f"model {name!r} is a vision-language model, and {vision_problem()}")
    with warnings.catch_warnings(), _quiet_progress():
        warnings.filterwarnings("ignore", message=".*use_fast.*")
        if is_vision:
            processor = AutoProcessor.from_pretrained(source, trust_remote_code=False, local_files_only=local_only)
            model = AutoModelForImageTextToText.from_pretrained(source, **kwargs)
            tokenizer = processor.tokenizer
            _configure_images(processor, device, image_splitting)
        else:
            processor = None
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False, local_files_only=local_only)
            model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    kind = "vision-language" if is_vision else "text"
    return LoadedModel(model, tokenizer, processor, device, name, dtype, f"{name} ({kind}, {config.model_type})")


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def _check_weights(folder: Path) -> None:
    """Refuse a model folder without safetensors weights before any loading: the kit never unpickles weights."""
    if any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise ValueError(
            f"model folder {str(folder)!r} holds only PyTorch pickle weights ({', '.join(pickles)}); smolkit loads "
            "safetensors (or the embedded GGUF) only, because loading a pickle can run code. If you trust its "
            "source, re-save it with transformers: from_pretrained(folder, use_safetensors=False)"
            ".save_pretrained(folder) writes model.safetensors"
        )
    raise FileNotFoundError(f"model folder {str(folder)!r} holds no model.safetensors weights")


def _configure_images(processor: Any, device: torch.device, image_splitting: bool | None) -> None:
    """On the CPU use one 512 px tile (64 tokens for SmolVLM) instead of up to 17 tiles (~1,088 tokens)."""
    image_processor = getattr(processor, "image_processor", None)
    if image_processor is None or not hasattr(image_processor, "do_image_splitting"):
        return
    if image_splitting is None:
        image_splitting = device.type == "cuda"
        if not image_splitting and image_processor.do_image_splitting:
            per_tile = getattr(processor, "image_seq_len", 64)
            edge = image_processor.max_image_size["longest_edge"]
            most = (image_processor.size["longest_edge"] // edge) ** 2 + 1
            print(
                f"smolkit: on the CPU each image is read as one {edge} px tile ({per_tile} image tokens) instead of "
                f"up to {most} tiles (~{most * per_tile:,} tokens); pass image_splitting=True to keep the model's "
                "default"
            )
    image_processor.do_image_splitting = bool(image_splitting)


# -- the entry point ---------------------------------------------------------------------------------------------


def load_model(
    name: str = EMBEDDED,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    image_splitting: bool | None = None,
) -> LoadedModel:
    """Load a model for the kit and return a ``LoadedModel``.

    ``name``: "embedded" (SmolLM2-135M-Instruct, offline), a Hub id such as "HuggingFaceTB/SmolVLM-256M-Instruct"
    (from the Hugging Face cache, or downloaded when online), or a local model folder. Only safetensors or GGUF
    weights are loaded, and never remote code. ``device``: "auto" (CUDA when available), "cpu", "cuda", "cuda:N".
    ``dtype``: "auto" (float32, see ``resolve_dtype``), "float32", "bfloat16", "float16".
    ``image_splitting``: for SmolVLM, None keeps the model's tiling on a GPU and uses one 512 px tile on the CPU.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be 'embedded', a Hub model id or a local folder, got {name!r}")
    require_supported_transformers()
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    if image_splitting is not None and not isinstance(image_splitting, bool):
        raise TypeError(f"image_splitting must be None, True or False, got {image_splitting!r}")
    start = time.perf_counter()
    # a seat on a shared GPU first (none free: told, before this kernel takes anything of it); then the cap's call
    # creates the CUDA context (a full GPU fails there first); the weights go to the device as read
    gpu_seats.take_seat(dev)
    with gpu_share.out_of_memory(dev):
        gpu_share.apply_gpu_memory_cap(dev)
        lm = _load(name, dev, dt, image_splitting)
    lm.model.eval()
    lm.load_seconds = time.perf_counter() - start
    return lm


def _load(name: str, dev: torch.device, dt: torch.dtype, image_splitting: bool | None) -> LoadedModel:
    if name == EMBEDDED:
        return _load_embedded(dev, dt)
    if "/" not in name and not Path(name).expanduser().is_dir():
        raise ValueError(
            f"unknown model name {name!r}: use 'embedded', a Hub id such as {SMOLVLM_MODELS[0]!r}, or a local folder"
        )
    if not Path(name).expanduser().is_dir() and not _is_repo_id(name):
        raise FileNotFoundError(
            f"model {name!r}: no such folder, and not a Hub id ('owner/name'); use 'embedded', a Hub id such as "
            f"{SMOLVLM_MODELS[0]!r}, or an existing local folder"
        )
    return _load_hub(name, dev, dt, image_splitting)


def _is_repo_id(name: str) -> bool:
    """True when ``name`` is a valid Hugging Face repo id ('owner/name'), as huggingface_hub checks it."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return name.count("/") == 1
