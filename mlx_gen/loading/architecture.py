"""Build an mlx-lm model from a :class:`~mlx_gen.loading.checkpoint.Checkpoint`.

mlx-lm owns the architectures (``mlx_lm.models.<model_type>``); this module picks the
class, quantizes the layers the weights say are quantized, checks every tensor's
shape against the config, and loads the weights.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx_lm.models
from mlx.utils import tree_flatten
from mlx_lm.utils import MODEL_REMAPPING, infer_quant_config

from mlx_gen.loading.checkpoint import Checkpoint
from mlx_gen.loading.config_validation import check_config, check_types
from mlx_gen.loading.subblock import replace_subblock_layers

DTYPES = {"float16": mx.float16, "bfloat16": mx.bfloat16, "float32": mx.float32}


@cache
def model_modules_with(marker: str) -> tuple[str, ...]:
    """The ``mlx_lm.models`` modules whose source contains ``marker`` (read, not imported)."""
    names = []
    for info in pkgutil.iter_modules(mlx_lm.models.__path__):
        spec = info.module_finder.find_spec(info.name)  # type: ignore[call-arg]
        if spec is None or spec.origin is None:
            continue
        with open(spec.origin, encoding="utf-8") as fh:
            if marker in fh.read():
                names.append(info.name)
    return tuple(names)


@cache
def supported_model_types() -> tuple[str, ...]:
    """Every ``model_type`` mlx-lm implements (modules under ``mlx_lm.models`` with a ``Model``)."""
    return tuple(sorted(set(model_modules_with("class Model(")) | set(MODEL_REMAPPING)))


def model_classes(config: dict[str, Any], *, source: str) -> tuple[type, type]:
    """Return ``(Model, ModelArgs)`` for ``config["model_type"]``.

    Raises:
        ValueError: No ``model_type``, or one mlx-lm does not implement (lists the valid ones).
    """
    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        raise ValueError(f"{source}: config.json has no model_type (got {model_type!r})")
    name = MODEL_REMAPPING.get(model_type, model_type)
    if model_type not in supported_model_types():
        raise ValueError(
            f"{source}: model_type {model_type!r} is not supported; supported: "
            f"{', '.join(supported_model_types())}"
        )
    module = importlib.import_module(f"mlx_lm.models.{name}")
    return module.Model, module.ModelArgs


def _quantize(model: nn.Module, config: dict[str, Any], weights: dict[str, mx.array]) -> None:
    """Swap in quantized layers wherever the weights carry ``scales``.

    Bits and group size are read per layer from the tensor shapes, so a checkpoint
    whose layers differ (GGUF: 4-bit linears, 8-bit embedding) loads as it is.
    """
    quantization = config["quantization"]
    # Group 16 (GGUF Q6_K/Q2_K) has no MLX kernel: those layers compute in two passes.
    subblock = replace_subblock_layers(model, quantization)

    def predicate(path: str, module: nn.Module) -> bool | dict[str, Any]:
        if path in subblock:
            return False
        if isinstance(quantization.get(path), (dict, bool)):
            return quantization[path]
        if not hasattr(module, "to_quantized") or f"{path}.scales" not in weights:
            return False
        return infer_quant_config(path, module, weights)

    nn.quantize(
        model,
        group_size=quantization.get("group_size", 64),
        bits=quantization.get("bits", 4),
        mode=quantization.get("mode", "affine"),
        class_predicate=predicate,
    )


def _check_shapes(model: nn.Module, weights: dict[str, mx.array], source: str) -> None:
    """Raise ``ValueError`` naming any missing, unexpected or mis-shaped tensor."""
    expected = dict(tree_flatten(model.parameters()))
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing:
        raise ValueError(
            f"{source}: weights are missing tensor(s) {missing[:5]} (of {len(missing)})"
        )
    if unexpected:
        raise ValueError(
            f"{source}: weights have tensor(s) the config does not use: {unexpected[:5]} "
            f"(of {len(unexpected)})"
        )
    for name, param in expected.items():
        if tuple(param.shape) != tuple(weights[name].shape):
            raise ValueError(
                f"{source}: tensor {name} has shape {tuple(weights[name].shape)} but the config "
                f"implies {tuple(param.shape)}"
            )


def _cast(name: str, value: mx.array, weights: dict[str, mx.array], dtype: mx.Dtype) -> mx.array:
    """Cast a floating weight to ``dtype``; quantization scales and biases keep theirs."""
    stem = name.rsplit(".", 1)[0]
    is_quant_param = name.endswith((".scales", ".biases")) and f"{stem}.scales" in weights
    if is_quant_param or not mx.issubdtype(value.dtype, mx.floating):
        return value
    return value.astype(dtype)


def build_model(checkpoint: Checkpoint, *, dtype: str | None = None) -> nn.Module:
    """Instantiate the mlx-lm model for ``checkpoint`` and load its weights.

    Args:
        checkpoint: What was read from disk.
        dtype: Cast floating-point weights to ``"float16"``, ``"bfloat16"`` or
            ``"float32"``; ``None`` keeps the stored types. Quantized tensors and their
            scales keep their layout.

    Returns:
        The model in eval mode, weights still lazy (memory-mapped until first use).

    Raises:
        ValueError: Unknown architecture, a bad config value, or weights that disagree
            with the config (the tensor and both shapes are named).
    """
    source = str(checkpoint.source)
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is invalid; valid: {', '.join(DTYPES)}")
    config = checkpoint.config
    check_config(config, checkpoint.weights, source=checkpoint.files.get("config.json", source))
    model_class, args_class = model_classes(config, source=source)
    check_types(config, args_class, source=checkpoint.files.get("config.json", source))
    try:
        model = model_class(args_class.from_dict(config))
    except (TypeError, ValueError, KeyError, AttributeError, ArithmeticError, IndexError) as e:
        raise ValueError(f"{source}: config.json does not describe a valid model ({e})") from None
    weights = checkpoint.weights
    if hasattr(model, "sanitize"):
        weights = model.sanitize(dict(weights))
    if config.get("quantization"):
        _quantize(model, config, weights)
    _check_shapes(model, weights, source)
    if dtype is not None:
        weights = {k: _cast(k, v, weights, DTYPES[dtype]) for k, v in weights.items()}
    model.load_weights(list(weights.items()), strict=True)
    model.eval()
    return model
