"""The ``config.json`` a GGUF file's metadata describes, checked against its tensors.

Keys come from the tables in :mod:`~mlx_gen.loading.gguf.architectures`; sizes are
checked against the tensors before a model is built, so a corrupt number is an error
naming the file, not a huge allocation.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from mlx_gen.loading.gguf.architectures import (
    ARCHITECTURES,
    OPTIONAL_KEYS,
    REQUIRED_KEYS,
    mistral3_rope_parameters,
    query_pre_attn_scalar,
    supported,
)


def _number(metadata: dict[str, Any], key: str, path: Path) -> int | float:
    value = metadata[key]
    if isinstance(value, float):  # float32 in the file: 1e-05, not 9.999999747378752e-06.
        return float(str(np.float32(value)))
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(
            f"{path}: metadata {key}={value!r} is not a number (per-layer values are not supported)"
        )
    return value


# The counts and sizes among the config keys, each checked as an int in [1, MAX_COUNT]
# before any is divided by or derived from (``head_count = 0`` divided by zero).
COUNT_KEYS = (
    "hidden_size",
    "num_hidden_layers",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "max_position_embeddings",
    "head_dim",
    "vocab_size",
    "sliding_window",
    "original_max_position_embeddings",
)
MAX_COUNT = 2**31 - 1


def _check_counts(config: dict[str, Any], keys: dict[str, str], arch: str, path: Path) -> None:
    """Refuse a count or size that is not an int in ``[1, MAX_COUNT]``, naming its GGUF key."""
    for name in COUNT_KEYS:
        value = config.get(name)
        if name in config and (
            isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_COUNT
        ):
            key = f"{arch}.{keys[name]}" if name in keys else "tokenizer.ggml.tokens (its length)"
            raise ValueError(
                f"{path}: GGUF metadata {key}={value!r} is invalid "
                f"(expected an int in [1, {MAX_COUNT}]); the file is corrupt"
            )


def _rope_scaling(metadata: dict[str, Any], arch: str, path: Path) -> dict[str, Any] | None:
    kind = metadata.get(f"{arch}.rope.scaling.type", "none")
    factor = metadata.get(f"{arch}.rope.scaling.factor")
    if kind == "none" or factor is None:
        return None
    if kind == "linear":
        return {"type": "linear", "factor": float(factor)}
    original = metadata.get(f"{arch}.rope.scaling.original_context_length")
    if kind == "yarn" and original is not None:
        return {
            "type": "yarn",
            "factor": float(factor),
            "original_max_position_embeddings": int(original),
        }
    raise ValueError(
        f"{path}: {arch}.rope.scaling.type={kind!r} is not supported "
        "(supported: none, linear, yarn with original_context_length)"
    )


def architecture(metadata: dict[str, Any], path: Path) -> str:
    """``general.architecture``, checked against :data:`ARCHITECTURES`."""
    arch = metadata.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise ValueError(
            f"{path}: GGUF architecture {arch!r} is not supported; supported "
            f"GGUF architectures: {supported()}"
        )
    return arch


def _rotary(config: dict[str, Any], metadata: dict[str, Any], arch: str, path: Path) -> None:
    head_dim = config.get("head_dim", config["hidden_size"] // config["num_attention_heads"])
    rotary = metadata.get(f"{arch}.rope.dimension_count", head_dim)
    if isinstance(rotary, bool) or not isinstance(rotary, int) or rotary < 1:
        raise ValueError(
            f"{path}: GGUF metadata {arch}.rope.dimension_count={rotary!r} is invalid "
            f"(expected an int in [1, {head_dim}], the head size); the file is corrupt"
        )
    if rotary != head_dim and ARCHITECTURES[arch].partial_rotary and 0 < rotary < head_dim:
        config["partial_rotary_factor"] = rotary / head_dim
    elif rotary != head_dim:
        raise ValueError(
            f"{path}: {arch}.rope.dimension_count={rotary} differs from the head "
            f"size {head_dim}; partial rotary embeddings are not supported for {arch}"
        )


def gguf_config(
    metadata: dict[str, Any],
    weights: dict[str, mx.array],
    layers: dict[str, dict[str, int]],
    path: Path,
) -> dict[str, Any]:
    """The ``config.json`` dictionary that GGUF ``metadata`` describes.

    ``weights`` are mlx-lm-named; they decide ``tie_word_embeddings`` (no ``lm_head``)
    and ``attention_bias``. ``layers`` maps each quantized module to its bits and group
    size; they become ``quantization``'s per-layer entries (the most common pair is the
    default), as mlx-lm writes mixed-precision configs.
    """
    arch = architecture(metadata, path)
    spec = ARCHITECTURES[arch]
    missing = [f"{arch}.{k}" for k in REQUIRED_KEYS.values() if f"{arch}.{k}" not in metadata]
    if missing:
        raise ValueError(f"{path}: GGUF metadata lacks {', '.join(missing)}")
    config: dict[str, Any] = {"model_type": spec.model_type, **spec.defaults}
    if spec.rope_traditional is not None:
        config["rope_traditional"] = spec.rope_traditional
    keys = {**REQUIRED_KEYS, **OPTIONAL_KEYS, **spec.keys}
    for name, key in keys.items():
        if f"{arch}.{key}" in metadata:
            config[name] = _number(metadata, f"{arch}.{key}", path)
    config.setdefault("vocab_size", len(metadata.get("tokenizer.ggml.tokens", [])))
    _check_counts(config, keys, arch, path)
    config.setdefault("num_key_value_heads", config["num_attention_heads"])
    config.setdefault("head_dim", config["hidden_size"] // config["num_attention_heads"])
    _rotary(config, metadata, arch, path)
    if spec.norm_plus_one:
        config["query_pre_attn_scalar"] = query_pre_attn_scalar(config)
    config["tie_word_embeddings"] = spec.always_tied or "lm_head.weight" not in weights
    config["attention_bias"] = "model.layers.0.self_attn.q_proj.bias" in weights
    if scaling := _rope_scaling(metadata, arch, path):
        if spec.model_type == "ministral3":
            kind = scaling["type"]
            raise ValueError(f"{path}: mistral3 with RoPE scaling ({kind}) is not supported")
        config["rope_scaling"] = scaling
    if spec.model_type == "ministral3":
        config["rope_parameters"] = mistral3_rope_parameters(config)
    if layers:
        pairs = Counter((v["group_size"], v["bits"]) for v in layers.values())
        group_size, bits = pairs.most_common(1)[0][0]
        config["quantization"] = {"group_size": group_size, "bits": bits, **layers}
    return config


def _rows(weights: dict[str, mx.array], module: str) -> int | None:
    """Rows (output features) of ``module``'s weight, packed or not; ``None`` if absent."""
    w = weights.get(f"{module}.weight")
    return None if w is None or w.ndim != 2 else w.shape[0]


def check_config(config: dict[str, Any], weights: dict[str, mx.array], path: Path) -> None:
    """Check the metadata's sizes against the tensors before a model is built from them,
    so a corrupt number (``block_count`` = 2**31) is an error, not a huge allocation.

    Raises:
        ValueError: A size disagrees with the tensors (both are named).
    """
    blocks = {int(k.split(".")[2]) for k in weights if k.startswith("model.layers.")}
    checks = [("num_hidden_layers", config["num_hidden_layers"], len(blocks))]
    if max(blocks, default=-1) + 1 != len(blocks):
        checks.append(("num_hidden_layers", config["num_hidden_layers"], max(blocks) + 1))
    if (vocab := _rows(weights, "model.embed_tokens")) is not None:
        checks.append(("vocab_size", config["vocab_size"], vocab))
    if (q := _rows(weights, "model.layers.0.self_attn.q_proj")) is not None:
        heads = config["num_attention_heads"] * config["head_dim"]
        checks.append(("num_attention_heads * head_dim", heads, q))
    for name, value, found in checks:
        if value != found:
            raise ValueError(
                f"{path}: GGUF metadata gives {name} = {value}, but the tensors imply {found}; "
                "the file is corrupt"
            )
    for name in ("hidden_size", "intermediate_size", "num_attention_heads", "head_dim"):
        if not isinstance(config[name], int) or not 0 < config[name] <= 1 << 20:
            raise ValueError(f"{path}: GGUF metadata gives {name} = {config[name]!r}")
