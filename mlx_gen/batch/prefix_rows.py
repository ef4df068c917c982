"""Batch rows served from a :class:`~mlx_gen.prefix_cache.PrefixCache`.

:func:`prefill_rows` looks each joining prompt up, restores the matched prefix into
that row's own caches, prefills only the rest (pausing at the lookup's checkpoints to
store them), stores the prompt's KV, and merges the rows into one left-padded batch
cache as mlx-lm's ``merge`` builds it. :func:`store_finished` copies a leaving row's KV
out of the batch cache (``extract``) and stores it under exactly the tokens it holds:
the prompt and the generated tokens fed so far.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mlx.core as mx

from mlx_gen.loading.loader import LoadedModel
from mlx_gen.prefix_cache import PrefixCache
from mlx_gen.prefix_cache.snapshot import held_nbytes


def _prefill_one(
    model: LoadedModel, prefix: PrefixCache, ids: list[int], step_size: int
) -> tuple[list[Any], int, int]:
    """One prompt's caches holding all but its last id, the cached count and its bytes."""
    hit = prefix.lookup(ids)
    layers, start, end = hit.layers, hit.tokens, len(ids) - 1
    hit_bytes = held_nbytes(layers) if hit.tokens else 0
    for stop in [*sorted(c for c in hit.checkpoints if start < c < end), end]:
        for first in range(start, stop, step_size):
            chunk = ids[first : min(first + step_size, stop)]
            model.model(mx.array(chunk, dtype=mx.int32)[None], cache=layers)  # (1, chunk)
            mx.eval([c.state for c in layers])
        if stop > start:
            prefix.insert(ids[:stop], layers)
        start = stop
    return layers, hit.tokens, hit_bytes


def prefill_rows(
    model: LoadedModel, prefix: PrefixCache, prompts: Sequence[list[int]], step_size: int
) -> tuple[list[Any], list[tuple[int, int]]]:
    """The batch caches for ``prompts`` (all but each last id) and, per prompt, the
    ``(tokens, bytes)`` of KV cache reused from ``prefix``."""
    rows, cached = [], []
    for ids in prompts:
        layers, count, nbytes = _prefill_one(model, prefix, ids, step_size)
        rows.append(layers)
        cached.append((count, nbytes))
    merged = [rows[0][i].merge([r[i] for r in rows]) for i in range(len(rows[0]))]
    mx.eval([c.state for c in merged])
    return merged, cached


def store_finished(prefix: PrefixCache, cache: list[Any], position: int, tokens: list[int]) -> None:
    """Store row ``position`` of the batch ``cache``, which holds exactly ``tokens``.

    Skipped when a fed id was a placeholder (a negative id: nothing was allowed) or when
    the row's KV length does not match (then nothing exact can be stored).
    """
    if not tokens or min(tokens) < 0:
        return
    layers = [c.extract(position) for c in cache]
    held = getattr(layers[0], "offset", None)
    if held == len(tokens):
        prefix.insert(tokens, layers)


def preload(model: LoadedModel, prefix: PrefixCache, ids: list[int], step_size: int = 512) -> int:
    """Prefill ``ids`` and store their KV as an entry (a system prompt warmed at start-up).

    Returns:
        How many of ``ids`` were already cached.
    """
    _, cached, _ = _prefill_one(model, prefix, [*ids, ids[-1]], step_size)  # extra id: not fed
    return cached
