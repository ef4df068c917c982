"""The MLX op that applies a token bitmask to logits (any backend: CPU, Metal, CUDA).

llguidance's own MLX kernel is a Metal kernel and fails on the CPU backend; this is
plain MLX: unpack the 32 bits of each word with a broadcast shift, then ``mx.where``.
"""

from __future__ import annotations

import mlx.core as mx

# Built from data, not `mx.arange`: a lazy module-level array belongs to the importing
# thread's stream, and the server samples on its worker thread.
_SHIFTS = mx.array(list(range(32)), dtype=mx.int32)


def apply_token_bitmask(logits: mx.array, bitmask: mx.array) -> mx.array:
    """Set every id whose bit is clear to ``-inf``; allowed ids keep their logits.

    Args:
        logits: ``(B, V)`` logits.
        bitmask: ``(B, W)`` int32; bit ``i % 32`` of word ``i // 32`` allows id ``i``.
            Ids at or beyond ``32 * W`` (a vocabulary larger than the mask) are
            disallowed; bits beyond ``V`` are ignored.

    Returns:
        ``(B, V)`` logits of the same dtype (lazy; the input is not changed).

    >>> import mlx.core as mx
    >>> logits = mx.array([[1.0, 2.0, 3.0, 4.0]])
    >>> apply_token_bitmask(logits, mx.array([[0b0101]], dtype=mx.int32)).tolist()
    [[1.0, -inf, 3.0, -inf]]
    """
    batch, vocab = logits.shape
    words = bitmask.shape[-1]
    bits = (mx.right_shift(bitmask[:, :, None], _SHIFTS) & 1).reshape(batch, 32 * words)
    if 32 * words >= vocab:
        allowed = bits[:, :vocab] != 0
    else:
        allowed = mx.concatenate(
            [bits != 0, mx.zeros((batch, vocab - 32 * words), dtype=mx.bool_)], axis=1
        )
    return mx.where(allowed, logits, mx.array(-mx.inf, dtype=logits.dtype))
