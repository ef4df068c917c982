"""Tensor-parallel loading over ``mx.distributed`` (one process per rank, ``mlx.launch``).

Every rank builds the model from lazily loaded weights, shards it with mlx-lm's
``Model.shard(group)`` (attention heads and MLP columns split across ranks; the
embedding, norms and output head stay whole on every rank), and only then reads the
weights: each projection is sliced before it is evaluated, so a rank never holds more
than its shard plus one layer's full tensors in memory.

Why the ranks agree on every token without exchanging it: the sharded layers end in
``all_sum``, and MLX's ring all-reduce (reduce-scatter, then all-gather) computes each
element's sum once, on one rank, and copies it to the others, so every rank holds the
same bits of the hidden state and hence of the logits. Processors and the sampler are
pure functions of the logits, the token history and a key chain from one seed; the seed
is the only per-process input, and :func:`agreed_seed` makes it rank 0's.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten
from mlx_lm.utils import MODEL_REMAPPING

from mlx_gen.loading.architecture import model_modules_with

# Config keys whose values mlx-lm's shard() divides by the number of ranks.
_DIVIDED = ("num_attention_heads", "num_key_value_heads", "intermediate_size")


@cache
def tensor_parallel_types() -> tuple[str, ...]:
    """Every ``model_type`` whose mlx-lm ``Model`` class has ``shard(group)`` (aliases too)."""
    names = model_modules_with("def shard(")
    aliases = [alias for alias, name in MODEL_REMAPPING.items() if name in names]
    return tuple(sorted({*names, *aliases}))


def distributed_group(distributed: bool | None) -> mx.distributed.Group | None:
    """The group to shard over, or ``None`` to load the whole model.

    Args:
        distributed: ``False``: never shard. ``True``: shard over the group
            ``mx.distributed.init()`` returns (a group of one loads the whole model).
            ``None``: shard when the process was launched as one of several ranks
            (``mx.distributed.init()`` reports a size above 1), otherwise load whole.

    Returns:
        The group when it has more than one rank, else ``None``.
    """
    if distributed is False or not mx.distributed.is_available():
        return None
    group = mx.distributed.init()
    return group if group.size() > 1 else None


class ShardingError(ValueError):
    """The model cannot be split over the ranks: the same error on every rank, so a
    command line prints it once (rank 0), not once per rank."""


def _check_divisible(config: dict[str, Any], ranks: int, source: str) -> None:
    """Raise ``ValueError`` if a dimension mlx-lm's shard() splits is not divisible."""
    config = {**config.get("text_config", {}), **config}
    for key in _DIVIDED:
        value = config.get(key)
        if isinstance(value, int) and value % ranks:
            raise ShardingError(
                f"{source}: {key}={value} cannot be split across {ranks} ranks "
                f"(tensor parallelism needs it divisible by the number of ranks)"
            )


def shard_model(
    model: nn.Module, group: mx.distributed.Group, *, config: dict[str, Any], source: str
) -> None:
    """Shard ``model`` in place over ``group`` and read this rank's weights.

    The weights must still be lazy (nothing else holding the unsharded tensors), so
    that evaluating the sharded parameters reads only this rank's slices; layers are
    evaluated one at a time to bound the transient memory to one layer.

    Args:
        model: The mlx-lm model, weights loaded lazily.
        group: The ranks to shard over (size > 1).
        config: The architecture config (to check the split dimensions).
        source: For messages.

    Raises:
        ShardingError: The architecture has no tensor-parallel ``shard`` in mlx-lm (the
            supported ``model_type`` values are listed), or its heads or MLP width are
            not divisible by the number of ranks.
    """
    if not hasattr(model, "shard"):
        raise ShardingError(
            f"{source}: model_type {config.get('model_type')!r} has no tensor-parallel "
            f"shard() in mlx-lm, so it cannot be distributed; supported: "
            f"{', '.join(tensor_parallel_types())}"
        )
    _check_divisible(config, group.size(), source)
    model.shard(group)
    for layer in getattr(model, "layers", []):
        mx.eval(layer.parameters())
    mx.eval(model.parameters())
    # Every rank has its shard before any rank computes (as mlx-lm's sharded_load does).
    mx.eval(mx.distributed.all_sum(mx.array(1.0), group=group, stream=mx.cpu))


def agreed_seed(group: mx.distributed.Group | None) -> int:
    """A fresh random seed, the same on every rank of ``group`` (rank 0's draw).

    Args:
        group: The ranks that must agree, or ``None`` for this process alone.

    Returns:
        A 32-bit seed from ``os.urandom``; with a group, rank 0's seed on every rank
        (the others contribute 0 to an ``all_sum``). Every rank must call it at the same
        point, as for any collective.
    """
    seed = int.from_bytes(os.urandom(4), "little")
    if group is None:
        return seed
    mine = mx.array(seed if group.rank() == 0 else 0, dtype=mx.uint32)
    return int(mx.distributed.all_sum(mine, group=group, stream=mx.cpu).item())


def parameter_bytes(model: nn.Module) -> int:
    """The bytes of ``model``'s parameters held by this process (its shard when sharded)."""
    return sum(v.nbytes for _, v in tree_flatten(model.parameters()))
