"""Affine codes (``w = scales * q + biases`` per group) and MLX's bit packing.

Every ggml block format mlx_gen loads is rewritten as integer codes ``q`` plus one
scale and one bias per group of consecutive elements along a row; MLX's quantized
layers then compute ``scales * q + biases`` exactly as llama.cpp decodes the block.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Codes:
    """One tensor's rows as affine codes.

    Attributes:
        q: ``(rows, K)`` uint8 codes, each below ``2**bits``.
        scales: ``(rows, K // group_size)`` float32.
        biases: ``(rows, K // group_size)`` float32.
        bits: Bits per code.
        group_size: Elements sharing one scale/bias pair.
    """

    q: np.ndarray
    scales: np.ndarray
    biases: np.ndarray
    bits: int
    group_size: int


@dataclass(frozen=True)
class Unpacker:
    """How one ggml type's blocks become :class:`Codes`.

    Attributes:
        block_size: Elements per block.
        type_size: Bytes per block.
        bits: Bits of the codes ``unpack`` returns.
        group_size: Their group size.
        unpack: ``(n, type_size)`` uint8 blocks -> ``(q (n, block_size), scales, biases)``
            with ``block_size // group_size`` scales and biases per block.
    """

    block_size: int
    type_size: int
    bits: int
    group_size: int
    unpack: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


def f16(blocks: np.ndarray, offset: int) -> np.ndarray:
    """The float16 at byte ``offset`` of each block, as ``(n, 1)`` float32."""
    return blocks[:, offset : offset + 2].copy().view(np.float16).astype(np.float32)


def nibbles(qs: np.ndarray, width: int) -> np.ndarray:
    """Split bytes into 4-bit codes: each run of ``width`` bytes gives its ``width`` low
    nibbles, then its ``width`` high nibbles (the ggml order)."""
    n = qs.shape[0]
    runs = qs.reshape(n, -1, 1, width) >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)
    return (runs & 0x0F).reshape(n, -1)


def bit_planes(raw: np.ndarray, n_planes: int, width: int, step: int = 1) -> np.ndarray:
    """``(n, width)`` bytes -> ``(n, n_planes * width)``: plane ``p`` is bit(s) ``p * step``
    of every byte (masked to ``step`` bits), the planes one after another."""
    n = raw.shape[0]
    shifts = (np.arange(n_planes, dtype=np.uint8) * step).reshape(1, n_planes, 1)
    return ((raw.reshape(n, 1, width) >> shifts) & ((1 << step) - 1)).reshape(n, -1)


def pack_bits(q: np.ndarray, bits: int) -> np.ndarray:
    """Pack ``(rows, K)`` codes into MLX's ``(rows, K * bits // 32)`` uint32 layout.

    Each row is one little-endian bit stream: element ``j`` occupies stream bits
    ``j * bits`` … ``j * bits + bits - 1``, and stream bit ``n`` is bit ``n % 32`` of word
    ``n // 32`` (3-, 5- and 6-bit codes straddle words).
    """
    rows, k = q.shape
    if 8 % bits == 0:  # 2, 4, 8 bits: whole codes per byte; the bytes, viewed as words
        per = 8 // bits
        packed = np.zeros((rows, k // per), np.uint8)
        for j in range(per):
            packed |= q[:, j::per] << np.uint8(j * bits)
        return packed.view(np.uint32)
    # 32 codes fill exactly ``bits`` words. Work on contiguous (32, groups) planes: code j
    # of every group at once (strided access was ~10x slower).
    codes = np.ascontiguousarray(q.reshape(-1, 32).T).astype(np.uint32)
    words = np.zeros((bits, codes.shape[1]), np.uint32)
    for j in range(32):
        word, shift = divmod(j * bits, 32)
        words[word] |= codes[j] << np.uint32(shift)  # uint32: the high bits drop off
        if shift + bits > 32:
            words[word + 1] |= codes[j] >> np.uint32(32 - shift)
    return np.ascontiguousarray(words.T).reshape(rows, k * bits // 32)
