"""A scripted model: preset logits per position, for exact loop/stopping/logprob tests."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx_lm.models.cache import KVCache

from mlx_gen.loading.generation_config import GenerationConfig
from mlx_gen.loading.loader import LoadedModel
from mlx_gen.loading.tokenizer import load_tokenizer
from tests.checkpoints import VOCAB_SIZE, write_tokenizer


class ScriptedModel(nn.Module):
    """Position ``i`` of the whole sequence (cache offset + i) gets ``table[i]`` as logits.

    It also records every input it was fed, so tests can see the look-ahead.
    """

    def __init__(self, table: np.ndarray) -> None:
        super().__init__()
        self.table = mx.array(table.astype(np.float32))
        self.fed: list[mx.array] = []

    def make_cache(self) -> list[KVCache]:
        return [KVCache()]

    def __call__(self, inputs: mx.array, cache: list[KVCache] | None = None) -> mx.array:
        self.fed.append(inputs)
        offset = 0 if cache is None else cache[0].offset
        T = inputs.shape[1]
        if cache is not None:
            dummy = mx.zeros((1, 1, T, 1))
            cache[0].update_and_fetch(dummy, dummy)
        rows = mx.arange(offset, offset + T)
        return self.table[rows][None] + 0 * inputs[..., None].astype(mx.float32)


def preferring(
    tokens: list[int], length: int = 64, vocab: int = VOCAB_SIZE, seed: int = 0
) -> np.ndarray:
    """A table whose argmax at sequence position ``i`` is ``tokens[i]`` (random elsewhere)."""
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((length, vocab)).astype(np.float32)
    for i, t in enumerate(tokens):
        table[i, t] = table[i].max() + 3.0
    return table


def script(prompt_len: int, generated: list[int], length: int = 64, seed: int = 0) -> np.ndarray:
    """A table under which greedy decoding after a ``prompt_len`` prompt yields ``generated``."""
    return preferring([0] * (prompt_len - 1) + generated, length=length, seed=seed)


def scripted_model(tmp_path: Path, table: np.ndarray, **config: object) -> LoadedModel:
    """A LoadedModel around :class:`ScriptedModel` with the tests' BPE tokenizer."""
    folder = tmp_path / "scripted_tok"
    folder.mkdir(exist_ok=True)
    write_tokenizer(folder)
    tokenizer = load_tokenizer(folder)
    gen = GenerationConfig(**config)  # type: ignore[arg-type]
    return LoadedModel(ScriptedModel(table), tokenizer, {"vocab_size": table.shape[1]}, gen, folder)
