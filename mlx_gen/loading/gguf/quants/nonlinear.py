"""IQ4_NL and IQ4_XS: 4-bit indices into a 16-entry codebook (``kvalues``, int8).

``d * kvalues[i]`` becomes the 8-bit code ``kvalues[i] + 128`` with scale ``d`` and
bias ``-128 * d`` per group of 32 (IQ4_XS: ``d`` times the sub-block's 6-bit scale
minus 32). Exact in float32: the code has 8 significant bits, the scale at most 16.
"""

from __future__ import annotations

import numpy as np

from mlx_gen.loading.gguf.quants.codes import Unpacker, bit_planes, f16, nibbles

# ggml's kvalues_iq4nl, shifted by 128 into uint8 codes.
KVALUES = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)
_CODES = (np.array(KVALUES, np.int16) + 128).astype(np.uint8)


def _iq4_nl(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = f16(blocks, 0)  # d, qs[16]
    return _CODES[nibbles(blocks[:, 2:], 16)], d, -128 * d


def _iq4_xs(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = blocks.shape[0]  # d, scales_h (uint16), scales_l[4], qs[128]
    high = bit_planes(blocks[:, 2:4].copy().view(np.uint16).astype(np.uint16), 8, 1, 2)
    low = nibbles(blocks[:, 4:8], 1).reshape(n, 8)  # per byte: low nibble, then high
    ls = (low | (high.astype(np.uint8) << 4)).astype(np.float32) - 32
    s = f16(blocks, 0) * ls  # (n, 8)
    return _CODES[nibbles(blocks[:, 8:], 16)], s, -128 * s


NONLINEAR = {
    "IQ4_NL": Unpacker(32, 18, 8, 32, _iq4_nl),
    "IQ4_XS": Unpacker(256, 136, 8, 32, _iq4_xs),
}
