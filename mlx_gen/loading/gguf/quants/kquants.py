"""The 256-element K-quant superblocks Q2_K … Q6_K as affine codes.

* Q4_K/Q5_K: 8 sub-blocks of 32 with 6-bit scale ``sc`` and min ``m``:
  ``d*sc*q - dmin*m`` is 4/5-bit, group 32, scale ``d*sc``, bias ``-dmin*m``.
* Q3_K: 16 sub-blocks of 16 with signed 6-bit scales ``a`` and codes ``q3`` in [-4, 3]:
  ``d*a*q3`` is written as 8-bit codes ``128 - a*q3`` with scale ``-d`` and bias
  ``128*d`` for the whole superblock (group 128).
* Q6_K, Q2_K: 16 sub-blocks of 16, each with its own scale: group 16, 6/2-bit codes.
  MLX's matmul kernels have no group 16; :mod:`mlx_gen.loading.subblock` computes it
  exactly as two group-32 passes.

Every product here fits float32's 24-bit significand (float16 ``d`` has 11 bits, the
sub-block scales at most 7, the codes at most 8), so float32 scales reproduce
``gguf.quants.dequantize`` bit for bit. Layouts: ``gguf.quants`` and ``ggml-common.h``.
"""

from __future__ import annotations

import numpy as np

from mlx_gen.loading.gguf.quants.codes import Unpacker, bit_planes, f16, nibbles


def _scale_min_k4(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 8 6-bit scales and mins of Q4_K/Q5_K from their 12 packed bytes."""
    n = packed.shape[0]
    d, m, m_d = np.split(packed.reshape(n, 3, 4), 3, axis=1)
    sc = np.concatenate([d & 0x3F, (m_d & 0x0F) | ((d >> 2) & 0x30)], axis=-1)
    mn = np.concatenate([m & 0x3F, (m_d >> 4) | ((m >> 2) & 0x30)], axis=-1)
    return sc.reshape(n, 8).astype(np.float32), mn.reshape(n, 8).astype(np.float32)


def _q4_k(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d, dmin = f16(blocks, 0), f16(blocks, 2)  # d, dmin, scales[12], qs[128]
    sc, mn = _scale_min_k4(blocks[:, 4:16])
    return nibbles(blocks[:, 16:], 32), d * sc, -dmin * mn


def _q5_k(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d, dmin = f16(blocks, 0), f16(blocks, 2)  # d, dmin, scales[12], qh[32], qs[128]
    sc, mn = _scale_min_k4(blocks[:, 4:16])
    high = bit_planes(blocks[:, 16:48], 8, 32)  # sub-block j: bit j of qh
    return nibbles(blocks[:, 48:], 32) | (high << 4), d * sc, -dmin * mn


def _q3_k(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = blocks.shape[0]  # hmask[32], qs[64], scales[12], d
    low = bit_planes(blocks[:, 32:96].reshape(n * 2, 32), 4, 32, 2).reshape(n, 256)
    high = bit_planes(blocks[:, :32], 8, 32)
    q3 = low.astype(np.int16) - 4 * (1 - high.astype(np.int16))  # in [-4, 3]
    packed = blocks[:, 96:108]
    lo = bit_planes(packed[:, :8], 2, 8, 4)  # 16 low nibbles
    hi = bit_planes(packed[:, 8:], 4, 4, 2)  # 16 two-bit highs
    a = (lo | (hi << 4)).astype(np.int16) - 32  # (n, 16) signed scales
    q = (128 - np.repeat(a, 16, axis=1) * q3).astype(np.uint8)  # in [0, 252]
    d = np.repeat(f16(blocks, 108), 2, axis=1)  # one scale for both groups of 128
    return q, -d, 128 * d


def _q6_k(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = blocks.shape[0]  # ql[128], qh[64], scales[16] (int8), d
    low = nibbles(blocks[:, :128], 64)
    high = bit_planes(blocks[:, 128:192].reshape(n * 2, 32), 4, 32, 2).reshape(n, 256)
    s = f16(blocks, 208) * blocks[:, 192:208].view(np.int8).astype(np.float32)
    return low | (high << 4), s, -32 * s


def _q2_k(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = blocks.shape[0]  # scales[16] (4-bit scale | 4-bit min << 4), qs[64], d, dmin
    q = bit_planes(blocks[:, 16:80].reshape(n * 2, 32), 4, 32, 2).reshape(n, 256)
    sc = blocks[:, :16]
    d, dmin = f16(blocks, 80), f16(blocks, 82)
    return q, d * (sc & 0x0F).astype(np.float32), -dmin * (sc >> 4).astype(np.float32)


KQUANTS = {
    "Q2_K": Unpacker(256, 84, 2, 16, _q2_k),
    "Q3_K": Unpacker(256, 110, 8, 128, _q3_k),
    "Q4_K": Unpacker(256, 144, 4, 32, _q4_k),
    "Q5_K": Unpacker(256, 176, 5, 32, _q5_k),
    "Q6_K": Unpacker(256, 210, 6, 16, _q6_k),
}
