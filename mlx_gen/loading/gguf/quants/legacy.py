"""The 32-element ggml formats Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 as affine codes.

Each block is one MLX group of 32: ``d * (q - offset)`` becomes scale ``d`` and bias
``-offset * d``; ``d * q + m`` (the ``_1`` types) becomes scale ``d`` and bias ``m``.
Layouts: ggml's ``ggml-common.h`` (``block_q4_0`` …).
"""

from __future__ import annotations

import numpy as np

from mlx_gen.loading.gguf.quants.codes import Unpacker, f16, nibbles


def _high_bits(blocks: np.ndarray, offset: int) -> np.ndarray:
    """The 32 fifth bits of a Q5 block (a little-endian uint32 at ``offset``), as 0/16."""
    qh = blocks[:, offset : offset + 4]
    bits = np.unpackbits(qh, axis=1, bitorder="little")  # (n, 32): element j's bit.
    return bits << 4


def _q4_0(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = f16(blocks, 0)  # block_q4_0: d (f16), qs[16]
    return nibbles(blocks[:, 2:], 16), d, -8 * d


def _q4_1(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d, m = f16(blocks, 0), f16(blocks, 2)  # block_q4_1: d, m, qs[16]
    return nibbles(blocks[:, 4:], 16), d, m


def _q5_0(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = f16(blocks, 0)  # block_q5_0: d, qh[4], qs[16]
    return nibbles(blocks[:, 6:], 16) | _high_bits(blocks, 2), d, -16 * d


def _q5_1(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d, m = f16(blocks, 0), f16(blocks, 2)  # block_q5_1: d, m, qh[4], qs[16]
    return nibbles(blocks[:, 8:], 16) | _high_bits(blocks, 4), d, m


def _q8_0(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = f16(blocks, 0)  # block_q8_0: d, qs[32] (int8); q + 128 flips the sign bit.
    return blocks[:, 2:] ^ np.uint8(0x80), d, -128 * d


LEGACY = {
    "Q4_0": Unpacker(32, 18, 4, 32, _q4_0),
    "Q4_1": Unpacker(32, 20, 4, 32, _q4_1),
    "Q5_0": Unpacker(32, 22, 5, 32, _q5_0),
    "Q5_1": Unpacker(32, 24, 5, 32, _q5_1),
    "Q8_0": Unpacker(32, 34, 8, 32, _q8_0),
}
