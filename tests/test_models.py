"""Loading: the embedded model and its cache, Hub names offline, devices, and the SmolVLM image path."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from PIL import Image

import smolkit
from smolkit import SamplingParams, generate, load_model, next_token_distribution
from smolkit.embedded import cache_problem, embedded_cache_path
from smolkit.models import resolve_device, resolve_dtype


def test_embedded_model_handle(lm):
    assert lm.name == "embedded" and lm.processor is None and not lm.is_vision
    assert lm.device == torch.device("cpu") and lm.dtype == torch.float32
    assert lm.vocab_size == 49152 and lm.context_length == 8192
    assert lm.eos_token_ids == [lm.tokenizer.convert_tokens_to_ids("<|im_end|>")]
    assert lm.model.config.model_type == "llama" and lm.model.config.num_hidden_layers == 30


def test_encode_with_and_without_chat_template(lm):
    chat = lm.encode("Hello")
    raw = lm.encode("Hello", chat=False)
    assert raw.tolist() == [lm.tokenizer("Hello", add_special_tokens=False)["input_ids"]]
    text = lm.decode(chat[0])
    assert text.startswith("<|im_start|>system") and text.endswith("<|im_start|>assistant\n")
    assert "<|im_start|>user\nHello<|im_end|>" in text


def test_the_embedded_model_is_real(lm):
    """Real SmolLM2 weights, not random ones: the model knows a capital."""
    dist = next_token_distribution(lm, "The capital of France is", SamplingParams(), chat=False)
    assert dist.top(1)[0].token == " Paris"


def test_cache_is_sound_and_loads_fast(lm):
    folder = embedded_cache_path()
    assert cache_problem(folder) is None
    manifest = json.loads((folder / "smolkit-cache.json").read_text())
    assert manifest["files"]["model.safetensors"] > 500_000_000
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config


def _plain_load(dtype: torch.dtype):
    """The embedded model the way transformers loads a folder by default (what load_model did before it skipped
    the throw-away initialisation and read the weights straight onto the device)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(embedded_cache_path()), dtype=dtype, trust_remote_code=False)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fast_load_gives_the_plain_loads_model(dtype):
    """Every tensor of load_model's model equals transformers' plain load, bit for bit, in the dtype asked for,
    on the device asked for, with the embedding and the output projection still one tensor."""
    fast = load_model(device="cpu", dtype=dtype).model
    plain = _plain_load(getattr(torch, dtype))
    ours, theirs = fast.state_dict(), plain.state_dict()
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        assert ours[key].dtype == value.dtype and ours[key].device == torch.device("cpu"), key
        assert torch.equal(ours[key], value), key
    assert fast.lm_head.weight is fast.model.embed_tokens.weight
    assert dict(fast.named_buffers()).keys() == dict(plain.named_buffers()).keys()
    for (name, a), b in zip(fast.named_buffers(), plain.buffers(), strict=True):
        assert torch.equal(a, b), name


def _initialised_tensors(load) -> list[tuple[int, ...]]:
    """Shapes of the real tensors filled with random numbers (transformers' weight initialisation) during load()."""
    filled = []
    with pytest.MonkeyPatch.context() as patch:
        for method in ("normal_", "uniform_"):
            original = getattr(torch.Tensor, method)

            def spy(tensor, *args, _original=original, **kwargs):
                if tensor.device.type != "meta":
                    filled.append(tuple(tensor.shape))
                return _original(tensor, *args, **kwargs)

            patch.setattr(torch.Tensor, method, spy)
        load()
    return filled


def test_load_initialises_no_weight_it_then_overwrites():
    """load_model fills no weight with random numbers (the plain load initialises the 49,152 x 576 embedding, which
    the checkpoint's tied lm_head then overwrites: the spy sees that, so it would see a regression)."""
    assert (49152, 576) in _initialised_tensors(lambda: _plain_load(torch.float32))
    assert _initialised_tensors(lambda: load_model(device="cpu")) == []


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """A copy of the converted cache in a temporary SMOLKIT_CACHE_DIR, to damage freely."""
    source = embedded_cache_path()
    monkeypatch.setenv("SMOLKIT_CACHE_DIR", str(tmp_path))
    target = embedded_cache_path()
    shutil.copytree(source, target)
    return target


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda f: (f / "smolkit-cache.json").unlink(), "smolkit-cache.json is missing"),
        (lambda f: (f / "tokenizer.json").unlink(), "tokenizer.json is missing"),
        (lambda f: (f / "model.safetensors").write_bytes(b"\0" * 100), "model.safetensors has 100 bytes"),
        (lambda f: shutil.rmtree(f), "not converted yet"),
    ],
    ids=["no-manifest", "half-written", "truncated-weights", "absent"],
)
def test_damaged_cache_is_detected(private_cache, damage, reason):
    damage(private_cache)
    assert reason in cache_problem(private_cache)


def test_damaged_cache_is_rebuilt_on_load(private_cache):
    (private_cache / "model.safetensors").write_bytes(b"\0" * 100)
    with pytest.warns(UserWarning, match="unusable"):
        lm = load_model(device="cpu")
    assert cache_problem(private_cache) is None
    assert lm.token_text(int(lm.encode("Hi", chat=False)[0, 0])) == "Hi"
    assert not [p for p in private_cache.parent.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_corrupt_weights_with_the_right_size_are_detected(private_cache):
    weights = private_cache / "model.safetensors"
    size = weights.stat().st_size
    with weights.open("r+b") as f:
        f.write(b"\xff" * 64)  # garbles the header, keeps the size
    assert weights.stat().st_size == size
    assert "unreadable" in cache_problem(private_cache)


def test_unknown_model_name():
    with pytest.raises(ValueError, match=r"unknown model name 'smolvlm'.*'embedded'"):
        load_model("smolvlm")
    with pytest.raises(ValueError, match="name must be"):
        load_model("")


def test_hub_model_not_cached_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        load_model("HuggingFaceTB/SmolVLM-256M-Instruct", device="cpu")
    message = str(info.value)
    assert "hf download HuggingFaceTB/SmolVLM-256M-Instruct" in message
    assert "load_model('embedded') works offline" in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error given when CUDA is absent")
def test_cuda_requested_without_cuda():
    with pytest.raises(ValueError, match=r"device='cuda': CUDA is not available.*device='cpu'"):
        load_model(device="cuda")


def test_device_and_dtype_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float32  # what is shown is what is sampled
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="dtype must be one of"):
        resolve_dtype("float8", torch.device("cpu"))


# -- the SmolVLM image path, on the tiny random Idefics3 ----------------------------------------------------------


def test_vlm_on_cpu_uses_one_tile(tiny_vlm):
    assert tiny_vlm.is_vision and tiny_vlm.processor.image_processor.do_image_splitting is False
    assert type(tiny_vlm.processor.image_processor).__name__ == "Idefics3ImageProcessorPil"  # no torchvision
    inputs = tiny_vlm.inputs("Describe the image.", image=Image.new("RGB", (300, 200), "red"))
    assert inputs["pixel_values"].shape[:2] == (1, 1)
    image_token = tiny_vlm.processor.image_token_id
    assert int((inputs["input_ids"] == image_token).sum()) == tiny_vlm.processor.image_seq_len


def test_vlm_image_splitting_when_asked(tiny_vlm_dir):
    lm = load_model(str(tiny_vlm_dir), device="cpu", image_splitting=True)
    inputs = lm.inputs("Describe the image.", image=Image.new("RGB", (300, 200), "red"))
    # 300x200 -> longest edge 256 (4 tiles of 64) -> 4 x 3 tiles + 1 global image
    assert inputs["pixel_values"].shape[:2] == (1, 13)
    assert int((inputs["input_ids"] == lm.processor.image_token_id).sum()) == 13 * lm.processor.image_seq_len


def test_vlm_generate_and_distribution_with_an_image(tiny_vlm, tmp_path):
    path = tmp_path / "red.png"
    Image.new("RGB", (80, 60), "red").save(path)
    params = SamplingParams(max_new_tokens=5, n=2, seed=0)
    result = generate(tiny_vlm, "Describe the image.", params, image=path)
    assert len(result.samples) == 2 and all(len(s.token_ids) == 5 for s in result.samples)
    red = next_token_distribution(tiny_vlm, "Describe the image.", SamplingParams(), image=path)
    blue = next_token_distribution(
        tiny_vlm, "Describe the image.", SamplingParams(), image=Image.new("RGB", (80, 60), "blue")
    )
    assert not torch.equal(red.logits, blue.logits)  # the pixels reach the model
    assert len(tiny_vlm.logits_cache) >= 2


def test_vlm_without_an_image(tiny_vlm):
    result = generate(tiny_vlm, "Hello", SamplingParams(max_new_tokens=3, seed=0))
    assert len(result.token_ids) == 3


def test_public_api():
    for name in smolkit.__all__:
        assert hasattr(smolkit, name), name
