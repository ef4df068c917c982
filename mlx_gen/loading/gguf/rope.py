"""Llama 3.1+ RoPE scaling, which GGUF stores as a ``rope_freqs.weight`` tensor.

llama.cpp's converter evaluates Meta's ``llama3`` frequency rule and stores the
per-frequency divisors, not the rule's parameters. mlx-lm computes the rule from
``rope_scaling``; this module finds the parameters that reproduce the tensor.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

# (factor, low_freq_factor, high_freq_factor, original_max_position_embeddings) of the
# released Llama 3.1 / 3.2 / 3.3 models.
CANDIDATES = ((8.0, 1.0, 4.0, 8192), (32.0, 1.0, 4.0, 8192), (16.0, 1.0, 4.0, 8192))


def llama3_factors(params: tuple[float, float, float, int], dims: int, theta: float) -> np.ndarray:
    """The divisors llama.cpp's converter writes for ``params`` (its ``generate_extra_tensors``)."""
    factor, low, high, original = params
    freqs = 1.0 / theta ** (np.arange(0, dims, 2, dtype=np.float64) / dims)
    wavelen = 2 * math.pi / freqs
    smooth = (original / wavelen - low) / (high - low)
    mid = 1 / ((1 - smooth) / factor + smooth)
    return np.where(wavelen < original / high, 1.0, np.where(wavelen > original / low, factor, mid))


def llama3_rope_scaling(factors: np.ndarray, config: dict[str, Any], path: Path) -> dict[str, Any]:
    """The ``rope_scaling`` entry that reproduces ``factors``.

    Raises:
        ValueError: No known parameter set reproduces them (the file is named).
    """
    dims = config["head_dim"]
    theta = config.get("rope_theta", 10000.0)
    for params in CANDIDATES:
        expected = llama3_factors(params, dims, theta)
        if expected.shape == factors.shape and np.allclose(expected, factors, rtol=1e-4):
            factor, low, high, original = params
            return {
                "rope_type": "llama3",
                "factor": factor,
                "low_freq_factor": low,
                "high_freq_factor": high,
                "original_max_position_embeddings": original,
            }
    raise ValueError(
        f"{path}: rope_freqs.weight does not match Llama 3's RoPE scaling with any known "
        "parameters (factor 8, 16 or 32; low 1, high 4, original context 8192)"
    )
