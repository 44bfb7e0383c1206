"""Code to paste: a few lines of Python that run a preset on transformers, vLLM or an OpenAI-style server.

Every value that enters the code is a plain Python literal written by ``source`` (a model name or prompt cannot
become code, a numpy value cannot become ``np.float64(0.7)``), no comment holds a user's value, and the code is
parsed before it is returned.
"""

from __future__ import annotations

import ast
import math
import warnings
from collections.abc import Mapping
from typing import Any

from smolkit import _checks
from smolkit.export import (
    DEFAULT_MODEL_ID,
    ExportWarning,
    check_params,
    model_id,
    to_openai,
    to_vllm,
    warn_hidden_stages,
)
from smolkit.hf import to_transformers
from smolkit.params import SamplingParams

__all__ = ["SNIPPET_TARGETS", "code", "model_name", "snippet", "source"]

SNIPPET_TARGETS = ("transformers", "vllm", "openai")

GENERATION_FIELDS = ("do_sample", "temperature", "top_k", "top_p", "min_p", "repetition_penalty", "max_new_tokens")
"""The GenerationConfig fields a transformers snippet sets (those that do not depend on the model)."""


def source(name: str, value: Any) -> str:
    """``value`` as Python source: a bool, int, float, str or None (numpy and 0-d torch values as the Python value
    they hold), or a list, tuple or dict of them; ``name`` is the field an error names. NaN and infinities are
    refused (``nan`` is no Python literal), as is anything else (its repr need not run).

    >>> import numpy as np
    >>> source("temperature", np.float32(0.7)), source("stop", [np.int64(5)])
    ('0.7', '[5]')
    """
    return repr(_plain_literal(name, value))


def _plain_literal(name: str, value: Any) -> Any:
    value = _checks.plain(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {_checks.describe(value)}")
    if isinstance(value, (list, tuple)):
        return type(value)(_plain_literal(name, v) for v in value)
    if isinstance(value, dict):
        return {_plain_literal(name, k): _plain_literal(name, v) for k, v in value.items()}
    if value is None:
        return None
    for kind in (bool, int, float, str):  # a subclass (an IntEnum, a str subclass) as the plain value
        if isinstance(value, kind):
            return kind(value)
    raise TypeError(f"{name} must be a plain value (a number, a string, True/False, None or a list of them) to be "
                    f"written into code, got {_checks.describe(value)} ({type(value).__name__})")


def code(lines: list[str]) -> str:
    """The snippet's lines as one text, parsed first: a snippet that is not Python is the kit's bug, not the
    reader's."""
    text = "\n".join(lines)
    ast.parse(text)
    return text


def model_name(model: Any) -> str:
    """``model`` checked as a model's name (a Hub id or a folder), as a plain str."""
    if not isinstance(model, str) or not model:
        raise TypeError(f"model must be the model's name (a Hub id), e.g. {DEFAULT_MODEL_ID!r}, got {model!r}")
    return _checks.text("model", model)
EMBEDDED_MODEL = "embedded"
"""The ``model`` of a snippet that loads the kit's own converted model offline (``smolkit.embedded_folder``)."""

EMBEDDED_NOTE = (
    "# the notebooks' model, offline: the kit's converted copy (4-bit weights, de-quantized); the Hub's "
    f"{DEFAULT_MODEL_ID!r} has the original weights and gives other numbers"
)

SAMPLE_PICTURE = "red_ball"
"""The picture a vision snippet describes: one of the kit's sample images, so the lines run offline as printed."""

PICTURE_IMPORT = ["import smolkit  # only for its sample picture", ""]
PICTURE_LINE = f"image = smolkit.sample_image({SAMPLE_PICTURE!r})  # your own: PIL.Image.open('photo.png')"
"""The line that makes ``image`` in a vision snippet (a PIL image, which both transformers and vLLM take)."""


VLLM_EMBEDDED_NOTE = (
    "# the notebooks' model, offline: the GGUF file the kit ships, which vLLM computes on with its own 4-bit kernels "
    "(close to the notebooks' numbers, not equal); the tokenizer from the kit's converted folder"
)


def snippet(
    params: SamplingParams,
    target: str,
    model: str = EMBEDDED_MODEL,
    prompt: str = "Write a haiku about tea.",
    vision: bool | None = None,
    lm: Any = None,
) -> str:
    """A few lines of Python that run this preset on ``target``: "transformers", "vllm" or "openai".

    ``model``: by default the kit's own model, loaded offline from its converted folder (vLLM reads the same 4-bit
    weights from the GGUF file the kit ships); a Hub id or a folder loads that instead.

    transformers: a GenerationConfig with every sampling field set (so neither the model's generation_config.json
    nor transformers' top_k=50 leaks in), smolkit's processors for presence/frequency penalties, the seed; for a
    vision-language model (``vision``; by default when the name says SmolVLM or Idefics) the processor,
    AutoModelForImageTextToText and a picture (the kit's sample red ball) in the message. vLLM:
    ``SamplingParams(**to_vllm())`` and ``llm.chat`` (for a vision model the picture as an ``image_pil`` part,
    vLLM's form for a PIL image in ``LLM.chat``). OpenAI: the client's ``chat.completions.create`` against a vLLM
    server, with ``extra_body`` (for a vision model the picture as a data URL in an ``image_url`` part). ``lm``: the
    loaded model the preset was explored on (its name is then the default ``model``; stages its generation config
    adds that vLLM cannot carry are named in an ExportWarning). Raises ValueError for an unknown target, and what
    the export raises.

    >>> print(snippet(SamplingParams(temperature=0.7), "vllm").splitlines()[0])
    from vllm import LLM, SamplingParams
    """
    check_params(params)
    target = _checks.choice("target", target, SNIPPET_TARGETS)
    if lm is not None and model == EMBEDDED_MODEL and lm.name != EMBEDDED_MODEL:
        model = model_id(lm)
    if target != "transformers":  # transformers loads the same generation_config.json and applies it
        warn_hidden_stages(lm, "vLLM", stacklevel=3)
    model, prompt = model_name(model), _checks.text("prompt", prompt)
    if vision is None:
        vision = any(word in model.lower() for word in ("smolvlm", "idefics"))
    vision = _checks.boolean("vision", vision)
    if target == "vllm":
        return _vllm(params, model, prompt, vision)
    if target == "openai":
        return _openai(params, DEFAULT_MODEL_ID if model == EMBEDDED_MODEL else model, prompt, vision)
    return _transformers(params, model, prompt, vision)


def _kwargs_lines(kwargs: Mapping[str, Any], indent: str = "    ") -> list[str]:
    return [f"{indent}{name}={source(name, value)}," for name, value in kwargs.items()]


def _vllm(params: SamplingParams, model: str, prompt: str, vision: bool = False) -> str:
    if vision:  # vLLM's LLM.chat takes a PIL image as an "image_pil" part of the message
        imports, picture = PICTURE_IMPORT, [PICTURE_LINE, vision_messages_line(prompt, "image_pil")]
        call = "outputs = llm.chat(messages, params)"
    else:
        imports, picture = [], []
        call = f"outputs = llm.chat({source('messages', [{'role': 'user', 'content': prompt}])}, params)"
    return code(
        [
            "from vllm import LLM, SamplingParams",
            "",
            *imports,
            *vllm_llm_lines(model),
            *picture,
            "params = SamplingParams(",
            *_kwargs_lines(to_vllm(params)),
            ")",
            call,
            "for completion in outputs[0].outputs:  # params.n of them",
            "    print(completion.text)",
        ]
    )


def vision_messages_line(prompt: str, image_key: str) -> str:
    """The line ``messages = [...]`` of a vision snippet: one user message, the picture (the variable ``image``)
    first and the prompt after it, as SmolVLM's model card orders them. ``image_key``: "image" for transformers'
    processor (``apply_chat_template`` takes a PIL image under it), "image_pil" for vLLM's ``LLM.chat``.

    >>> vision_messages_line("Hi", "image")
    "messages = [{'role': 'user', 'content': [{'type': 'image', 'image': image}, {'type': 'text', 'text': 'Hi'}]}]"
    """
    key = _checks.choice("image_key", image_key, ("image", "image_pil"))
    text = source("prompt", {"type": "text", "text": prompt})
    return f"messages = [{{'role': 'user', 'content': [{{'type': {key!r}, {key!r}: image}}, {text}]}}]"


def vllm_llm_lines(model: str) -> list[str]:
    """The lines that make ``llm = LLM(...)``: for the kit's own model, from the GGUF file it ships (vLLM reads GGUF
    files, experimentally, docs.vllm.ai features/quantization/gguf; newer releases through the vllm-gguf-plugin
    package) with the tokenizer of its converted folder; vLLM cannot read that folder itself, since its loader skips
    ``lm_head.weight`` for a model with tied embeddings, where the folder keeps the embedding."""
    if model != EMBEDDED_MODEL:
        return [f"llm = LLM(model={model!r})"]
    return [
        "import smolkit  # only for where its files are",
        "",
        VLLM_EMBEDDED_NOTE,
        "llm = LLM(model=str(smolkit.embedded.embedded_gguf_path()), tokenizer=smolkit.embedded_folder())",
    ]


def _openai(params: SamplingParams, model: str, prompt: str, vision: bool = False) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExportWarning)  # said in a comment in the code instead
        body = to_openai(params, model=model, messages=[{"role": "user", "content": prompt}])
    extra = body.pop("extra_body")
    picture: list[str] = []
    if vision:  # the OpenAI API takes a picture as an image_url part: here a data URL of the PNG bytes
        picture = [
            *PICTURE_IMPORT,
            PICTURE_LINE,
            "buffer = io.BytesIO()",
            'image.save(buffer, format="PNG")',
            'url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()',
            "messages = [{'role': 'user', 'content': [{'type': 'image_url', 'image_url': {'url': url}}, "
            f"{source('prompt', {'type': 'text', 'text': prompt})}]}}]",
        ]
    arguments = [
        "    messages=messages," if vision and name == "messages" else f"    {name}={source(name, value)},"
        for name, value in body.items()
    ]
    return code(
        [
            *(["import base64", "import io", ""] if vision else []),
            "from openai import OpenAI",
            "",
            *picture,
            "# a vLLM server for the model below, started with: vllm serve <model>",
            'client = OpenAI(base_url="http://localhost:8000/v1", api_key="EMPTY")',
            "response = client.chat.completions.create(",
            *arguments,
            "    # vLLM's extensions: the client merges extra_body into the request's JSON; a plain OpenAI",
            "    # endpoint rejects them: drop extra_body there",
            f"    extra_body={source('extra_body', extra)},",
            ")",
            "for choice in response.choices:",
            "    print(choice.message.content)",
        ]
    )


def _transformers(params: SamplingParams, model: str, prompt: str, vision: bool) -> str:
    gc, processors = to_transformers(params)
    fields = {name: getattr(gc, name) for name in GENERATION_FIELDS if getattr(gc, name) is not None}
    if params.min_tokens:
        fields["min_new_tokens"] = params.min_tokens
    penalties = [(type(p).__name__, p.value) for p in processors]
    return code(
        [
            *_transformers_imports(vision, [cls for cls, _ in penalties]),
            "",
            *_transformers_load(model, prompt, vision),
            *_transformers_config(fields, params.stop_token_ids),
            *_transformers_generate(penalties, params.n, params.seed, vision),
        ]
    )


def _transformers_imports(vision: bool, penalty_classes: list[str]) -> list[str]:
    classes = "AutoModelForImageTextToText, AutoProcessor" if vision else "AutoModelForCausalLM, AutoTokenizer"
    lines = ["import torch", f"from transformers import {classes}, GenerationConfig"]
    if penalty_classes:
        lines[1:1] = [
            "from transformers import LogitsProcessorList",
            f"from smolkit import {', '.join(penalty_classes)}  # transformers has no such penalty",
        ]
    return lines


def _transformers_load(model: str, prompt: str, vision: bool) -> list[str]:
    if vision:  # SmolVLM: a processor reads the picture and the text, given as parts of the message
        return [
            *PICTURE_IMPORT,
            f"processor = AutoProcessor.from_pretrained({model!r})  # SmolVLM's processor: tiles and text",
            f"model = AutoModelForImageTextToText.from_pretrained({model!r})",
            PICTURE_LINE,
            vision_messages_line(prompt, "image"),
            "inputs = processor.apply_chat_template(",
            '    messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"',
            ")",
        ]
    if model == EMBEDDED_MODEL:
        lines = [
            "import smolkit  # only for where its converted model is",
            "",
            EMBEDDED_NOTE,
            "tokenizer = AutoTokenizer.from_pretrained(smolkit.embedded_folder())",
            "model = AutoModelForCausalLM.from_pretrained(smolkit.embedded_folder())",
        ]
    else:
        lines = [
            f"tokenizer = AutoTokenizer.from_pretrained({model!r})",
            f"model = AutoModelForCausalLM.from_pretrained({model!r})",
        ]
    return [
        *lines,
        f"messages = {source('messages', [{'role': 'user', 'content': prompt}])}",
        "inputs = tokenizer.apply_chat_template(",
        '    messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"',
        ")",
    ]


def _transformers_config(fields: dict[str, Any], stop_token_ids: tuple[int, ...]) -> list[str]:
    lines = []
    if stop_token_ids:
        lines.append("eos = model.generation_config.eos_token_id  # the model's own end of sequence, kept")
    lines += ["gc = GenerationConfig(", *_kwargs_lines(fields)]
    if stop_token_ids:
        stops = ", ".join(map(str, stop_token_ids))
        lines.append(f"    eos_token_id=[*(eos if isinstance(eos, list) else [eos]), {stops}],")
    return [*lines, ")"]


def _transformers_generate(
    penalties: list[tuple[str, float]], n: int, seed: int | None, vision: bool = False
) -> list[str]:
    reader = "processor" if vision else "tokenizer"
    call = "out = model.generate(**inputs, generation_config=gc"
    lines = []
    if penalties:
        procs = ", ".join(f"{cls}({source(cls, value)})" for cls, value in penalties)
        lines.append(f"processors = LogitsProcessorList([{procs}])  # they find where each prompt ends")
        call += ", logits_processor=processors"
    if n > 1:
        if vision:  # the picture's tensors have more dimensions than the token ids: repeat along the batch
            lines.append(f"inputs = {{k: v.repeat_interleave({n}, dim=0) for k, v in inputs.items()}}  # n={n} samples")
        else:
            lines.append(f"inputs = {{k: v.repeat({n}, 1) for k, v in inputs.items()}}  # n={n} samples")
    if seed is not None:
        lines.append(f"torch.manual_seed({seed})")
    return [
        *lines,
        call + ")",
        "prompt_length = inputs['input_ids'].shape[1]",
        "for row in out:",
        f"    print({reader}.decode(row[prompt_length:], skip_special_tokens=True))",
    ]
