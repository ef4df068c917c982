"""Folders written by mlx-lm's own converter (as on mlx-community) load with mlx_gen."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import mlx_lm
import numpy as np
import pytest
from mlx_lm.convert import convert as mlx_lm_convert

import mlx_gen as mg
from tests.checkpoints import llama_config, write_checkpoint


@pytest.mark.parametrize("bits", [4, 8])
def test_mlx_lm_quantized_folder_loads_with_same_logits(tmp_path, bits):
    src, dst = tmp_path / "hf", tmp_path / f"mlx-q{bits}"
    write_checkpoint(
        src,
        llama_config(intermediate_size=128, hidden_size=64),
        generation_config={"eos_token_id": [2, 3]},
    )
    mlx_lm_convert(str(src), str(dst), quantize=True, q_bits=bits, q_group_size=32)
    ours = mg.load(dst)
    theirs, _ = mlx_lm.load(str(dst))
    assert isinstance(ours.model.model.layers[0].mlp.up_proj, nn.QuantizedLinear)
    assert ours.model.model.layers[0].mlp.up_proj.bits == bits
    ids = mx.array([[5, 17, 42, 99, 7]])
    np.testing.assert_allclose(np.array(ours.model(ids)), np.array(theirs(ids)), atol=1e-5)
    assert ours.generation_config.eos_token_ids == (2, 3)
