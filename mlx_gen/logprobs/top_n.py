"""The ids of the ``n`` largest entries of each row, for small ``n``.

``mx.argpartition`` over a whole vocabulary row costs about 0.5 ms per 32k row on
the CPU backend. For small ``n`` a two-level search is exact and about 4x faster:
split the row into blocks of 128, take each block's maximum, keep the ``n`` blocks
with the largest maxima, and partition only their ``n * 128`` entries.

Why it is exact: let ``v`` be the ``n``-th largest value. At most ``n - 1`` entries
exceed ``v``, so at most ``n - 1`` blocks have a maximum above ``v``: every block
holding an entry above ``v`` is kept, whatever the order of tied maxima. The other
kept blocks have maxima ``<= v``, taken largest first, so they supply as many
entries equal to ``v`` as exist outside the first ones, which is enough to fill
``n``. Ties at ``v`` are broken arbitrarily, as ``argpartition`` breaks them. The
``-inf`` padding of a partial last block never displaces a real entry, even a
``-inf`` one (a row with fewer than ``n`` finite entries still gets real ids).
"""

from __future__ import annotations

import mlx.core as mx

BLOCK = 128


def block_maxima(x: mx.array) -> tuple[mx.array, mx.array]:
    """Split ``(B, V)`` rows into ``(B, V // BLOCK, BLOCK)`` blocks (padding the last
    with ``-inf``) and return ``(blocks, their maxima (B, V // BLOCK))``.

    ``mx.max(maxima, axis=-1)`` is each row's maximum, so callers needing both the
    maximum and the top ids pay for one pass over the row.
    """
    rows, vocab = x.shape
    n_blocks = -(-vocab // BLOCK)
    if n_blocks * BLOCK != vocab:
        x = mx.pad(x, [(0, 0), (0, n_blocks * BLOCK - vocab)], constant_values=-mx.inf)
    blocks = x.reshape(rows, n_blocks, BLOCK)
    return blocks, mx.max(blocks, axis=-1)


def top_n_ids(x: mx.array, n: int, blocks: tuple[mx.array, mx.array] | None = None) -> mx.array:
    """``(B, n)`` int32 ids of each row's ``n`` largest entries, in no particular order.

    Args:
        x: ``(B, V)`` values.
        n: ``1 <= n <= V``.
        blocks: :func:`block_maxima` of ``x``, if the caller already has it.

    >>> import mlx.core as mx
    >>> sorted(top_n_ids(mx.array([[0.1, 0.9, 0.5, 0.7]]), 2)[0].tolist())
    [1, 3]
    """
    rows, vocab = x.shape
    if not 1 <= n <= vocab:
        raise ValueError(f"n={n} is invalid: expected 1..{vocab}")
    if n == vocab:
        return mx.broadcast_to(mx.arange(vocab, dtype=mx.int32), x.shape)
    if n * BLOCK * 2 > vocab:  # few blocks: one partition of the whole row is as cheap
        return mx.argpartition(-x, n - 1, axis=-1)[:, :n].astype(mx.int32)
    grouped, maxima = blocks if blocks is not None else block_maxima(x)
    best = mx.argpartition(-maxima, n - 1, axis=-1)[:, :n]  # (B, n) block indices
    candidates = mx.take_along_axis(grouped, best[:, :, None], axis=1)  # (B, n, BLOCK)
    candidates = candidates.reshape(rows, n * BLOCK)
    ids = (best[:, :, None] * BLOCK + mx.arange(BLOCK)).reshape(rows, n * BLOCK)
    if vocab % BLOCK:  # padding ranks below every real entry, -inf ones included
        floor = mx.array(-mx.finfo(candidates.dtype).max, dtype=candidates.dtype)
        candidates = mx.where(ids < vocab, mx.maximum(candidates, floor), -mx.inf)
    pick = mx.argpartition(-candidates, n - 1, axis=-1)[:, :n]
    return mx.take_along_axis(ids, pick, axis=-1).astype(mx.int32)
