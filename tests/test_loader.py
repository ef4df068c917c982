"""Loading HF folders: logits against an independent numpy forward, architectures, sharding."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from mlx_gen.loading.loader import load
from tests.checkpoints import llama_config, write_checkpoint
from tests.reference_llama import forward

IDS = [5, 17, 42, 99, 7, 260, 3, 11]

LLAMA31_SCALING = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8,
}

CASES = {
    "llama_gqa_untied": llama_config(),
    "llama_tied": llama_config(tie_word_embeddings=True, num_key_value_heads=4),
    "llama31_rope_scaling": llama_config(rope_scaling=LLAMA31_SCALING, rope_theta=500000.0),
    "qwen2_bias": llama_config(
        model_type="qwen2", architectures=["Qwen2ForCausalLM"], tie_word_embeddings=True
    ),
}


def logits_of(model: nn.Module, ids: list[int]) -> np.ndarray:
    out = model(mx.array([ids]))
    mx.eval(out)
    return np.array(out[0].astype(mx.float32))


@pytest.mark.parametrize("name", sorted(CASES))
def test_logits_match_numpy_reference(tmp_path, name):
    config = CASES[name]
    weights = write_checkpoint(tmp_path / name, config)
    loaded = load(tmp_path / name)
    expected = forward(weights, config, IDS)
    np.testing.assert_allclose(logits_of(loaded.model, IDS), expected, atol=1e-4, rtol=1e-4)


def test_sharded_checkpoint_loads_all_shards(tmp_path):
    config = llama_config()
    weights = write_checkpoint(tmp_path / "sharded", config, shards=3)
    loaded = load(tmp_path / "sharded")
    np.testing.assert_allclose(
        logits_of(loaded.model, IDS), forward(weights, config, IDS), atol=1e-4, rtol=1e-4
    )


def test_loaded_model_carries_merged_generation_config(llama_dir):
    loaded = load(llama_dir)
    # config.json [2] ∪ generation_config.json [3, 2] ∪ tokenizer "<|im_end|>" (2)
    assert loaded.generation_config.eos_token_ids == (2, 3)
    assert loaded.generation_config.eos_sources[2] == (
        "config.json",
        "generation_config.json",
        "tokenizer",
    )
    assert loaded.generation_config.bos_token_id == 1
    assert loaded.vocab_size == 320


def test_dtype_cast(llama_dir):
    loaded = load(llama_dir, dtype="float16")
    assert loaded.model.model.embed_tokens.weight.dtype == mx.float16
    assert np.isfinite(logits_of(loaded.model, IDS)).all()
