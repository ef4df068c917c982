"""Prefilling prompts into one left-padded batch KV cache (mlx-lm's ``BatchKVCache``).

Prompts are prefilled right-padded, as mlx-lm's batch prompt processing does, so that
no query attends to padding only; ``finalize`` then rolls each row to left padding so
every row's newest token sits in the same column.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models.cache import make_prompt_cache

from mlx_gen.batch.step import STREAM
from mlx_gen.loading.loader import LoadedModel


def make_batch_cache(model: nn.Module, size: int) -> list[Any]:
    """Empty mlx-lm batch caches (one per layer) for ``size`` rows, as the model needs them."""
    rows = [make_prompt_cache(model) for _ in range(size)]
    return [rows[0][layer].merge([r[layer] for r in rows]) for layer in range(len(rows[0]))]


def prefill(model: LoadedModel, prompts: list[list[int]], step_size: int) -> list[Any]:
    """Run every prompt but its last token through the model; return the batch caches.

    Right-padded, as mlx-lm's batch prompt processing does, so that no query attends to
    padding only; ``finalize`` then rolls each row to left padding.
    """
    cache = make_batch_cache(model.model, len(prompts))
    bodies = [p[:-1] for p in prompts]
    width = max(len(b) for b in bodies)
    if width == 0:
        return cache
    padding = [width - len(b) for b in bodies]
    tokens = mx.array(
        [b + [0] * pad for b, pad in zip(bodies, padding, strict=True)], dtype=mx.int32
    )
    with mx.stream(STREAM):
        for c in cache:
            c.prepare(lengths=[len(b) for b in bodies], right_padding=padding)
        for start in range(0, width, step_size):
            model.model(tokens[:, start : start + step_size], cache=cache)  # (B, chunk)
            mx.eval([c.state for c in cache])
        for c in cache:
            c.finalize()
        mx.eval([c.state for c in cache])
    return cache
