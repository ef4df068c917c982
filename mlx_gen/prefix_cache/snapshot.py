"""A frozen copy of mlx-lm KV caches: what one prefix-cache entry holds.

A :class:`KVSnapshot` keeps each layer's cache class, its ``state`` arrays (cut to the
positions actually held, so no spare capacity is counted or kept alive) and its
``meta`` scalars. :func:`restore` builds fresh mlx-lm cache objects from it with
``from_state``; the arrays handed out are new array objects, so a live cache that
writes in place (``keys[..., i:j, :] = ...``) never changes the snapshot (MLX copies a
buffer that another array still references).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
from mlx_lm.models import cache as mlx_cache
from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache


@dataclass(frozen=True)
class KVSnapshot:
    """Evaluated copies of every layer's KV state after ``length`` tokens.

    Attributes:
        length: Tokens the caches hold.
        classes: The mlx-lm cache class name of each layer (``KVCache``, ``RotatingKVCache``).
        states: Each layer's ``state`` tuple (arrays and ints), as ``from_state`` takes it.
        nbytes: Bytes of every array held (``.nbytes`` summed).
        trimmable: Whether the restored caches can be cut back to a shorter prefix
            (False for a sliding window that has already wrapped around).
    """

    length: int
    classes: tuple[str, ...]
    states: tuple[tuple[Any, ...], ...]
    nbytes: int
    trimmable: bool


def _held(layer: Any) -> tuple[Any, ...]:
    """``layer.state`` with the keys and values cut to the positions in use."""
    state = tuple(layer.state)
    keys = state[0] if state else None
    offset = getattr(layer, "offset", None)
    if keys is None or not isinstance(offset, int) or offset >= keys.shape[2]:
        return state
    if isinstance(layer, (mlx_cache.KVCache, mlx_cache.RotatingKVCache)):
        # Not yet full: positions 0..offset are the tokens, in order.
        return (keys[..., :offset, :], state[1][..., :offset, :], *state[2:])
    return state


def held_nbytes(layers: Sequence[Any]) -> int:
    """Bytes of the KV positions ``layers`` hold (no spare capacity, no trimmed tail)."""
    return sum(s.nbytes for layer in layers for s in _held(layer) if isinstance(s, mx.array))


def snapshot(layers: Sequence[Any], length: int) -> KVSnapshot:
    """Copy ``layers`` (mlx-lm caches holding ``length`` tokens) into a :class:`KVSnapshot`.

    Raises:
        ValueError: A cache type without a ``state`` that round-trips (named).
    """
    classes, states = [], []
    for layer in layers:
        name = type(layer).__name__
        if getattr(mlx_cache, name, None) is not type(layer):
            raise ValueError(f"cache type {name!r} is not an mlx-lm cache; it cannot be cached")
        state = tuple(mx.contiguous(s) if isinstance(s, mx.array) else s for s in _held(layer))
        classes.append(name)
        states.append(state)
    arrays = [s for state in states for s in state if isinstance(s, mx.array)]
    mx.eval(arrays)  # Materialise now: the live cache goes on changing.
    return KVSnapshot(
        length,
        tuple(classes),
        tuple(states),
        sum(a.nbytes for a in arrays),
        can_trim_prompt_cache(list(layers)),
    )


def restore(snap: KVSnapshot, keep: int) -> list[Any]:
    """Fresh mlx-lm caches holding the first ``keep`` tokens of ``snap``.

    Raises:
        ValueError: ``keep`` is longer than the snapshot, or shorter while the snapshot
            cannot be trimmed (an internal misuse: lookups never ask for that).
    """
    if not 0 <= keep <= snap.length or (keep < snap.length and not snap.trimmable):
        raise ValueError(
            f"cannot restore {keep} tokens from a snapshot of {snap.length} "
            f"(trimmable: {snap.trimmable})"
        )
    layers = [
        getattr(mlx_cache, name).from_state(
            tuple(s[...] if isinstance(s, mx.array) else s for s in state)  # new array objects
        )
        for name, state in zip(snap.classes, snap.states, strict=True)
    ]
    if keep < snap.length:
        trim_prompt_cache(layers, snap.length - keep)
    return layers
