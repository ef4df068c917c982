"""Random-weight Llama presets in Hugging Face layout, written once and cached.

The weights are random (the speed of a forward pass does not depend on their values);
the tokenizer is a word-level vocabulary of the preset's size, so every id decodes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file
from tokenizers import Tokenizer, models, pre_tokenizers

PRESETS: dict[str, dict] = {
    "tiny": {  # smoke tests of the benchmarks themselves
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "intermediate_size": 128,
        "vocab_size": 512,
        "tie_word_embeddings": True,
    },
    "15M": {
        "hidden_size": 288,
        "num_hidden_layers": 6,
        "num_attention_heads": 6,
        "num_key_value_heads": 6,
        "intermediate_size": 768,
        "vocab_size": 32000,
        "tie_word_embeddings": True,
    },
    "110M": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "num_key_value_heads": 12,
        "intermediate_size": 2048,
        "vocab_size": 32000,
        "tie_word_embeddings": True,
    },
    "1B": {
        "hidden_size": 2048,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "intermediate_size": 8192,
        "vocab_size": 128256,
        "tie_word_embeddings": True,
        "rope_theta": 500000.0,
    },
}


def _tokenizer(folder: Path, vocab_size: int) -> None:
    vocab = {f"t{i}": i for i in range(vocab_size)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "t2", "bos_token": "t1"}
        )
    )


def write_preset(name: str, root: Path) -> Path:
    """Write preset ``name`` under ``root`` (once) and return its folder."""
    folder = root / f"llama-{name}"
    if (folder / "model.safetensors").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    p = PRESETS[name]
    config = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": 4096,
        "eos_token_id": 2,
        "bos_token_id": 1,
        **p,
    }
    rng = np.random.default_rng(0)
    d, f, v = p["hidden_size"], p["intermediate_size"], p["vocab_size"]
    hd = d // p["num_attention_heads"]
    nkv = p["num_key_value_heads"] * hd

    def w(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape, dtype=np.float32) * 0.02

    weights = {"model.embed_tokens.weight": w(v, d), "model.norm.weight": np.ones(d, np.float32)}
    for i in range(p["num_hidden_layers"]):
        q = f"model.layers.{i}."
        weights.update(
            {
                q + "self_attn.q_proj.weight": w(d, d),
                q + "self_attn.k_proj.weight": w(nkv, d),
                q + "self_attn.v_proj.weight": w(nkv, d),
                q + "self_attn.o_proj.weight": w(d, d),
                q + "mlp.gate_proj.weight": w(f, d),
                q + "mlp.up_proj.weight": w(f, d),
                q + "mlp.down_proj.weight": w(d, f),
                q + "input_layernorm.weight": np.ones(d, np.float32),
                q + "post_attention_layernorm.weight": np.ones(d, np.float32),
            }
        )
    tmp = folder / "model.safetensors.tmp"
    save_file(weights, str(tmp))
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    _tokenizer(folder, v)
    tmp.rename(folder / "model.safetensors")
    return folder
