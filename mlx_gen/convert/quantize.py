"""Change a built model's precision for conversion: dequantize, cast, quantize.

The rules :func:`set_precision` applies, in this order:

1. A source whose layers are already quantized (a GGUF file, an MLX 4-bit folder) is
   dequantized first when the caller asks for a ``dtype`` or for quantization, so
   quantized weights are never quantized twice. With neither, its layers stay
   quantized exactly as stored.
2. ``dtype`` casts every floating parameter (mlx-lm's ``convert`` does the same).
3. Quantization uses mlx-lm's ``quantize_model`` (affine mode), so the folder has the
   layout ``mlx_lm.load`` reads: ``weight``/``scales``/``biases`` per layer and
   ``quantization`` = ``quantization_config`` = ``{"group_size", "bits", "mode"}`` in
   ``config.json``. Layers whose input size is not a multiple of the group size stay
   in floating point (mlx-lm's rule).
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_map
from mlx_lm.models.switch_layers import QuantizedSwitchLinear
from mlx_lm.utils import dequantize_model, quantize_model

from mlx_gen.loading.architecture import DTYPES
from mlx_gen.loading.dequantize import dequantize_layers
from mlx_gen.loading.subblock import SubBlockEmbedding, SubBlockLinear

QUANT_BITS = (4, 8)
QUANT_GROUP_SIZES = (32, 64, 128)
DEFAULT_Q_BITS = 4
DEFAULT_Q_GROUP_SIZE = 64  # mlx-lm's defaults for affine mode.
_QUANTIZED_LAYERS = (
    nn.QuantizedLinear,
    nn.QuantizedEmbedding,
    QuantizedSwitchLinear,
    SubBlockLinear,  # GGUF Q6_K/Q2_K: group 16
    SubBlockEmbedding,
)


def check_quantization(bits: int, group_size: int) -> None:
    """Raise ``ValueError`` unless ``bits`` and ``group_size`` are supported values."""
    if bits not in QUANT_BITS:
        raise ValueError(f"q_bits={bits!r} is invalid; valid: {', '.join(map(str, QUANT_BITS))}")
    if group_size not in QUANT_GROUP_SIZES:
        valid = ", ".join(map(str, QUANT_GROUP_SIZES))
        raise ValueError(f"q_group_size={group_size!r} is invalid; valid: {valid}")


def quantized_layers(model: nn.Module) -> list[nn.Module]:
    """The model's quantized layers (linear, embedding and mixture-of-experts)."""
    return [m for _, m in model.named_modules() if isinstance(m, _QUANTIZED_LAYERS)]


def _cast(model: nn.Module, dtype: str) -> None:
    target = DTYPES[dtype]

    def cast(value: mx.array) -> mx.array:
        return value.astype(target) if mx.issubdtype(value.dtype, mx.floating) else value

    model.update(tree_map(cast, model.parameters()))


def _quantize(
    model: nn.Module, config: dict[str, Any], bits: int, group_size: int, source: str
) -> dict[str, Any]:
    # quantize_model prints a bits-per-weight line to stdout; keep stdout clean.
    with contextlib.redirect_stdout(io.StringIO()):
        model, config = quantize_model(model, config, group_size, bits)
    if not quantized_layers(model):
        smaller = [str(g) for g in QUANT_GROUP_SIZES if g < group_size]
        hint = f"try q_group_size {' or '.join(smaller)}" if smaller else "nothing to quantize"
        raise ValueError(
            f"{source}: no layer can be quantized with q_group_size={group_size} (a layer's "
            f"input size must be a multiple of it); {hint}"
        )
    return config


def set_precision(
    model: nn.Module,
    config: dict[str, Any],
    *,
    dtype: str | None,
    quantize: bool,
    bits: int,
    group_size: int,
    source: str,
) -> dict[str, Any]:
    """Dequantize, cast and quantize ``model`` in place, following the module rules.

    Args:
        model: A model built by :func:`mlx_gen.loading.architecture.build_model`.
        config: Its architecture config (not modified).
        dtype: ``"float16"``, ``"bfloat16"``, ``"float32"`` or ``None`` (keep).
        quantize: Quantize the linear and embedding layers.
        bits: Bits per weight when quantizing.
        group_size: Weights per scale/bias pair when quantizing.
        source: How to name the source in error messages.

    Returns:
        The config to write: ``quantization``/``quantization_config`` describe the
        model's layers (removed when it was dequantized), and an existing
        ``torch_dtype``/``dtype`` key names the new ``dtype``.

    Raises:
        ValueError: A bad ``dtype``, ``bits`` or ``group_size``, or no layer fits the
            group size.
    """
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is invalid; valid: {', '.join(DTYPES)}")
    if quantize:
        check_quantization(bits, group_size)
    config = dict(config)
    if quantized_layers(model) and (quantize or dtype is not None):
        dequantize_model(model)
        dequantize_layers(model)  # the group-16 layers mlx-lm does not know
        config.pop("quantization", None)
        config.pop("quantization_config", None)
    if dtype is not None:
        _cast(model, dtype)
        for key in ("torch_dtype", "dtype"):
            if key in config:
                config[key] = dtype
    if quantize:
        config = _quantize(model, config, bits, group_size, source)
    if config.get("quantization"):
        config["quantization_config"] = config["quantization"]
    return config
