"""Random but valid ggml blocks of every quantized type mlx_gen loads, for tests.

Codes and packed sub-block scales are random bytes; each block's float16 super-scales
(``d``, ``dmin``, ``m``) are set to realistic magnitudes (1e-4 … 3e-2, as in real files),
so no block decodes to inf or NaN. Offsets: ggml's ``ggml-common.h``.
"""

from __future__ import annotations

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

# ggml type -> byte offsets of its float16 fields, and which of them may be negative.
F16_FIELDS = {
    "Q4_0": [0],
    "Q4_1": [0, 2],
    "Q5_0": [0],
    "Q5_1": [0, 2],
    "Q8_0": [0],
    "Q2_K": [80, 82],
    "Q3_K": [108],
    "Q4_K": [0, 2],
    "Q5_K": [0, 2],
    "Q6_K": [208],
    "IQ4_NL": [0],
    "IQ4_XS": [0],
}
SIGNED = {("Q4_1", 2), ("Q5_1", 2)}  # the minimum m of Q4_1/Q5_1 is signed


def random_blocks(ggml_type: str, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Raw bytes ``(rows, bytes_per_row)`` of a ``shape`` tensor of ``ggml_type``."""
    block, size = GGML_QUANT_SIZES[GGMLQuantizationType[ggml_type]]
    rows, width = shape
    raw = rng.integers(0, 256, (rows * width // block, size), dtype=np.uint8)
    for offset in F16_FIELDS[ggml_type]:
        scale = np.exp(rng.uniform(np.log(1e-4), np.log(3e-2), len(raw)))
        if (ggml_type, offset) in SIGNED:
            scale *= rng.choice([-1, 1], len(raw))
        raw[:, offset : offset + 2] = scale.astype(np.float16).view(np.uint8).reshape(-1, 2)
    return raw.reshape(rows, -1)
