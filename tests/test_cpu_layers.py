"""Compiled RMSNorm and RoPE layers give bit for bit the logits of the layers they replace."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import pytest
from mlx_lm.models.cache import make_prompt_cache

import mlx_gen as mg
from mlx_gen.batch.prefill import make_batch_cache
from mlx_gen.loading.cpu_layers import CompiledRMSNorm, CompiledRoPE, compile_cpu_layers


def _uncompiled(model: nn.Module) -> nn.Module:
    for _, module in model.named_modules():
        if type(module) is CompiledRMSNorm:
            module.__class__ = nn.RMSNorm
        elif type(module) is CompiledRoPE:
            module.__class__ = nn.RoPE
    return model


def _logits(model: nn.Module, prompt: list[int], steps: int) -> list[mx.array]:
    """Prefill in two chunks, then greedy decode steps; every step's logits."""
    cache = make_prompt_cache(model)
    out = [model(mx.array([prompt[:5]]), cache=cache), model(mx.array([prompt[5:]]), cache=cache)]
    token = mx.argmax(out[-1][:, -1, :], axis=-1)[None]
    for _ in range(steps):
        out.append(model(token, cache=cache))
        token = mx.argmax(out[-1][:, -1, :], axis=-1)[None]
    mx.eval(out)
    return out


@pytest.mark.parametrize("dtype", [None, "float16"])
def test_compiled_layers_give_identical_logits(llama_dir, dtype):
    prompt = [1, 17, 42, 99, 7, 250, 31, 8, 64]
    compiled = mg.load(llama_dir, dtype=dtype).model
    plain = _uncompiled(mg.load(llama_dir, dtype=dtype).model)
    assert {type(m) for _, m in compiled.named_modules()} >= {CompiledRMSNorm, CompiledRoPE}
    assert not {type(m) for _, m in plain.named_modules()} & {CompiledRMSNorm, CompiledRoPE}
    for a, b in zip(_logits(compiled, prompt, 12), _logits(plain, prompt, 12), strict=True):
        assert mx.array_equal(a, b).item()


def test_compiled_layers_with_batch_offsets(llama_dir):
    """Batched caches pass RoPE one offset per row (an array)."""
    compiled = mg.load(llama_dir).model
    plain = _uncompiled(mg.load(llama_dir).model)
    tokens = mx.array([[5, 9, 11, 0], [7, 3, 2, 8]])
    outs = []
    for model in (compiled, plain):
        cache = make_batch_cache(model, 2)
        for c in cache:
            c.prepare(lengths=[3, 4], right_padding=[1, 0])
        steps = [model(tokens, cache=cache)]
        for c in cache:
            c.finalize()
        for _ in range(4):
            steps.append(model(mx.argmax(steps[-1][:, -1:, :], axis=-1), cache=cache))
        mx.eval(steps)
        outs.append(steps)
    for a, b in zip(*outs, strict=True):
        assert mx.array_equal(a, b).item()


def test_stories260k_identical_logits(stories_dir):
    prompt = [1, 403, 407, 261, 378, 300, 301, 13]
    compiled = mg.load(stories_dir).model
    plain = _uncompiled(mg.load(stories_dir).model)
    for a, b in zip(_logits(compiled, prompt, 20), _logits(plain, prompt, 20), strict=True):
        assert mx.array_equal(a, b).item()


def test_only_exact_layer_classes_are_swapped():
    class ScaledRoPE(nn.RoPE):  # a variant with its own __call__ stays as it is
        pass

    block = nn.Sequential(nn.RMSNorm(8), ScaledRoPE(8), nn.RoPE(8), nn.LayerNorm(8))
    assert compile_cpu_layers(block) == 2
    kinds = [type(m).__name__ for m in block.layers]
    assert kinds == ["CompiledRMSNorm", "ScaledRoPE", "CompiledRoPE", "LayerNorm"]
    assert block.layers[0].parameters().keys() == {"weight"}
