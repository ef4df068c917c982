"""Tiny random checkpoints in Hugging Face layout, written by tests to ``tmp_path``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

VOCAB_SIZE = 320
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|eot|>"]
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def write_tokenizer(folder: Path, *, eos: str = "<|im_end|>", bos: str | None = None) -> None:
    """A byte-level BPE over all 256 bytes plus merges and four special tokens."""
    byte_chars = list(pre_tokenizers.ByteLevel.alphabet())
    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for ch in sorted(byte_chars):
        vocab[ch] = len(vocab)
    merges = []
    for a, b in [
        ("Ġ", "t"),
        ("h", "e"),
        ("Ġt", "he"),
        ("i", "n"),
        ("Ġ", "a"),
        ("o", "n"),
        ("e", "r"),
        ("Ġ", "w"),
        ("Ġw", "o"),
        ("r", "d"),
        ("Ġwo", "rd"),
    ]:
        merges.append((a, b))
        vocab.setdefault(a + b, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    tok.save(str(folder / "tokenizer.json"))
    settings = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": eos,
        "bos_token": bos,
        "chat_template": CHATML,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))


def llama_config(**changes: Any) -> dict[str, Any]:
    """A 2-layer Llama with grouped-query attention (4 heads, 2 KV heads)."""
    config = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "intermediate_size": 64,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5,
        "vocab_size": VOCAB_SIZE,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "max_position_embeddings": 256,
    }
    config.update(changes)
    return config


def random_weights(config: dict[str, Any], seed: int = 0) -> dict[str, np.ndarray]:
    """HF-named float32 weights for a Llama/Qwen2 ``config``."""
    rng = np.random.default_rng(seed)
    d, f, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    hd = config.get("head_dim") or d // config["num_attention_heads"]
    nq, nkv = config["num_attention_heads"] * hd, config["num_key_value_heads"] * hd
    bias = config["model_type"] == "qwen2" or config.get("attention_bias", False)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    out = {"model.embed_tokens.weight": w(v, d), "model.norm.weight": 1 + w(d)}
    if not config.get("tie_word_embeddings", True):
        out["lm_head.weight"] = w(v, d)
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        for name, shape in [
            ("self_attn.q_proj", (nq, d)),
            ("self_attn.k_proj", (nkv, d)),
            ("self_attn.v_proj", (nkv, d)),
            ("self_attn.o_proj", (d, nq)),
            ("mlp.gate_proj", (f, d)),
            ("mlp.up_proj", (f, d)),
            ("mlp.down_proj", (d, f)),
        ]:
            out[p + name + ".weight"] = w(*shape)
        if bias:
            for name, n in [("q_proj", nq), ("k_proj", nkv), ("v_proj", nkv)]:
                out[p + f"self_attn.{name}.bias"] = w(n)
        out[p + "input_layernorm.weight"] = 1 + w(d)
        out[p + "post_attention_layernorm.weight"] = 1 + w(d)
    return out


def write_checkpoint(
    folder: Path,
    config: dict[str, Any],
    *,
    seed: int = 0,
    generation_config: dict[str, Any] | None = None,
    shards: int = 1,
) -> dict[str, np.ndarray]:
    """Write config, weights (optionally sharded with an index), tokenizer; return the weights."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = random_weights(config, seed)
    (folder / "config.json").write_text(json.dumps(config))
    if generation_config is not None:
        (folder / "generation_config.json").write_text(json.dumps(generation_config))
    names = sorted(weights)
    if shards == 1:
        save_file(weights, str(folder / "model.safetensors"))
    else:
        weight_map = {}
        for k in range(shards):
            fname = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
            part = {n: weights[n] for n in names[k::shards]}
            save_file(part, str(folder / fname))
            weight_map.update({n: fname for n in part})
        index = {"metadata": {}, "weight_map": weight_map}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    write_tokenizer(folder)
    return weights
