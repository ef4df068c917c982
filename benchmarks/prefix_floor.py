"""The compute floor of a cached turn: the model's own forward pass, in-process, no server.

For a turn that finds ``cached`` tokens in the cache and must prefill ``new`` more, the
least any engine can do before its first token is one forward pass of the ``new``
tokens (with logits for the last) on a KV cache already holding ``cached`` tokens. On a
small model that pass costs more than the same tokens alone, because every new token
attends to the whole context: :func:`floors` measures both, so a server's time to first
token can be compared with what the model itself needs (``bench_prefix_cache.py``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from pathlib import Path

import mlx.core as mx
from mlx_lm.models.cache import make_prompt_cache, trim_prompt_cache

import mlx_gen


def _fastest(model, cache: list, ids: mx.array, tries: int) -> float:
    """Fastest of ``tries`` passes of ``ids`` (1, n) on ``cache``, trimmed back after each."""
    best = float("inf")
    for _ in range(tries):
        start = time.perf_counter()
        logits = model(ids, cache=cache)[:, -1, :]  # (1, V): the first token's logits
        mx.eval(logits, [c.state for c in cache])
        best = min(best, time.perf_counter() - start)
        trim_prompt_cache(cache, ids.shape[1])
    return best


def floors(model_dir: Path, turns: Sequence[tuple[int, int]], tries: int = 2) -> list[dict]:
    """Per ``(cached, new)`` turn of one growing conversation (``cached`` not decreasing):
    ``{"context": s, "alone": s}``, the fastest pass of ``new`` random tokens on a cache
    of ``cached`` tokens and on an empty cache (mlx_gen's model: what its server runs)."""
    loaded = mlx_gen.load(str(model_dir))
    model, vocab, rng = loaded.model, loaded.vocab_size, random.Random(0)

    def ids(n: int) -> mx.array:
        return mx.array([[rng.randrange(3, vocab) for _ in range(n)]], dtype=mx.int32)

    context, held, out = make_prompt_cache(model), 0, []
    for cached, new in turns:
        for start in range(held, cached, 512):  # grow the context to ``cached`` tokens
            model(ids(min(512, cached - start)), cache=context)
            mx.eval([c.state for c in context])
        held = max(held, cached)
        out.append(
            {
                "context": _fastest(model, context, ids(new), tries),
                "alone": _fastest(model, make_prompt_cache(model), ids(new), tries),
            }
        )
    return out
