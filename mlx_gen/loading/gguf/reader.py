"""Read a llama.cpp GGUF file into a :class:`~mlx_gen.loading.checkpoint.Checkpoint`.

``mx.load`` parses the file: Q4_0/Q4_1/Q8_0 tensors arrive in MLX's quantized layout
(``weight``/``scales``/``biases``, group size 32), F16/F32 as plain arrays, plus the
metadata. This module checks what ``mx.load`` cannot (tensor types it would silently
dequantize, the architecture), turns the metadata into a ``config.json`` dictionary,
and renames tensors to mlx-lm's names with one table. The tokenizer is built from the
metadata by :mod:`mlx_gen.loading.gguf.tokenizer`.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from mlx_gen.loading.checkpoint import Checkpoint
from mlx_gen.loading.generation_config import CONFIG_JSON, GENERATION_CONFIG_JSON
from mlx_gen.loading.gguf.header import check_tensor_types, tensor_types
from mlx_gen.loading.gguf.tokenizer import read_gguf_tokenizer

# GGUF architecture -> (mlx-lm model_type, rope_traditional). llama.cpp's converter
# permutes Llama's q/k rows into interleaved RoPE pairs, so mlx-lm's "traditional" RoPE
# reproduces the original model without undoing the permutation; Qwen2 is stored in
# Hugging Face order and uses rotate-half RoPE.
ARCHITECTURES = {"llama": ("llama", True), "qwen2": ("qwen2", False)}

# config.json key -> GGUF key under "<architecture>.", required and optional.
REQUIRED_KEYS = {
    "hidden_size": "embedding_length",
    "num_hidden_layers": "block_count",
    "intermediate_size": "feed_forward_length",
    "num_attention_heads": "attention.head_count",
    "rms_norm_eps": "attention.layer_norm_rms_epsilon",
}
OPTIONAL_KEYS = {
    "num_key_value_heads": "attention.head_count_kv",
    "rope_theta": "rope.freq_base",
    "max_position_embeddings": "context_length",
    "head_dim": "attention.key_length",
    "vocab_size": "vocab_size",
}

# GGUF tensor name -> mlx-lm name; "blk.N." prefixes become "model.layers.N.".
GLOBAL_TENSORS = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
BLOCK_TENSORS = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TENSOR_NAME = re.compile(r"(?:blk\.(\d+)\.)?(\w+)\.(weight|scales|biases|bias)")


def _plain(value: Any) -> Any:
    """A metadata value as Python data (MLX gives numbers as arrays)."""
    if isinstance(value, mx.array):
        return value.item() if value.ndim == 0 else value.tolist()
    return value


def _number(metadata: dict[str, Any], key: str, path: Path) -> int | float:
    value = metadata[key]
    if isinstance(value, float):  # float32 in the file: 1e-05, not 9.999999747378752e-06.
        return float(str(np.float32(value)))
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(
            f"{path}: metadata {key}={value!r} is not a number (per-layer values are not supported)"
        )
    return value


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
            f"GGUF architectures: {', '.join(ARCHITECTURES)}"
        )
    return arch


def gguf_config(
    metadata: dict[str, Any], weights: dict[str, mx.array], path: Path
) -> dict[str, Any]:
    """The ``config.json`` dictionary that GGUF ``metadata`` describes.

    ``weights`` are mlx-lm-named; they decide ``tie_word_embeddings`` (no ``lm_head``),
    ``attention_bias`` and the default quantization bits (the most common).
    """
    arch = architecture(metadata, path)
    model_type, rope_traditional = ARCHITECTURES[arch]
    missing = [f"{arch}.{k}" for k in REQUIRED_KEYS.values() if f"{arch}.{k}" not in metadata]
    if missing:
        raise ValueError(f"{path}: GGUF metadata lacks {', '.join(missing)}")
    config: dict[str, Any] = {"model_type": model_type, "rope_traditional": rope_traditional}
    for name, key in {**REQUIRED_KEYS, **OPTIONAL_KEYS}.items():
        if f"{arch}.{key}" in metadata:
            config[name] = _number(metadata, f"{arch}.{key}", path)
    config.setdefault("vocab_size", len(metadata.get("tokenizer.ggml.tokens", [])))
    config.setdefault("num_key_value_heads", config["num_attention_heads"])
    head_dim = config.get("head_dim", config["hidden_size"] // config["num_attention_heads"])
    rotary = metadata.get(f"{arch}.rope.dimension_count", head_dim)
    if rotary != head_dim:
        raise ValueError(
            f"{path}: {arch}.rope.dimension_count={rotary} differs from the head "
            f"size {head_dim}; partial rotary embeddings are not supported"
        )
    config["tie_word_embeddings"] = "lm_head.weight" not in weights
    config["attention_bias"] = "model.layers.0.self_attn.q_proj.bias" in weights
    if scaling := _rope_scaling(metadata, arch, path):
        config["rope_scaling"] = scaling
    bits = Counter(
        weights[k[: -len("scales")] + "weight"].shape[-1] // v.shape[-1]
        for k, v in weights.items()
        if k.endswith(".scales")
    )
    if bits:  # Each layer's own bits are read from its shapes; this is the default.
        config["quantization"] = {"group_size": 32, "bits": bits.most_common(1)[0][0]}
    return config


def rename_tensors(tensors: dict[str, mx.array], path: Path) -> dict[str, mx.array]:
    """Rename GGUF tensors to mlx-lm names (``blk.0.attn_q.weight`` ->
    ``model.layers.0.self_attn.q_proj.weight``).

    Raises:
        ValueError: Names the table does not know (listed).
    """
    renamed, unknown = {}, []
    for name, value in tensors.items():
        match = _TENSOR_NAME.fullmatch(name)
        block, stem, suffix = match.groups() if match else (None, None, None)
        table = GLOBAL_TENSORS if block is None else BLOCK_TENSORS
        if stem not in table:
            unknown.append(name)
            continue
        prefix = "" if block is None else f"model.layers.{block}."
        renamed[f"{prefix}{table[stem]}.{suffix}"] = value
    if unknown:
        known = [*GLOBAL_TENSORS, *(f"blk.N.{k}" for k in BLOCK_TENSORS)]
        raise ValueError(
            f"{path}: unsupported tensor name(s) {unknown[:5]} (of {len(unknown)}); "
            f"known: {', '.join(known)}"
        )
    return renamed


def gguf_generation_config(metadata: dict[str, Any]) -> dict[str, Any]:
    """``generation_config.json`` equivalent: special ids from ``tokenizer.ggml.*``.

    ``eos_token_id`` is a list when the file also names end-of-turn/end-of-message
    tokens (``eot_token_id``/``eom_token_id``, which llama.cpp also stops on).
    """
    out: dict[str, Any] = {}
    eos = [metadata.get(f"tokenizer.ggml.{k}_token_id") for k in ("eos", "eot", "eom")]
    eos = list(dict.fromkeys(i for i in eos if isinstance(i, int)))
    if eos:
        out["eos_token_id"] = eos[0] if len(eos) == 1 else eos
    for name, key in [("bos_token_id", "bos_token_id"), ("pad_token_id", "padding_token_id")]:
        if isinstance(metadata.get(f"tokenizer.ggml.{key}"), int):
            out[name] = metadata[f"tokenizer.ggml.{key}"]
    return out


def read_gguf(path: Path) -> Checkpoint:
    """Read a GGUF file (llama.cpp format) into a :class:`Checkpoint`.

    Args:
        path: A ``.gguf`` file with tensors of type F32, F16, Q4_0, Q4_1 or Q8_0.

    Returns:
        The checkpoint: config and generation settings from the metadata, tensors under
        mlx-lm names (quantized ones as ``weight``/``scales``/``biases``), the tokenizer.

    Raises:
        ValueError: The file is truncated or corrupt, holds an unsupported tensor type
            or architecture, or unknown tensor names; the file and the value are named.
    """
    check_tensor_types(path, tensor_types(path))
    try:
        tensors, raw_metadata = mx.load(str(path), return_metadata=True)
    except Exception as e:  # MLX raises RuntimeError with internal wording.
        raise ValueError(
            f"{path}: cannot read the GGUF file ({e}); it is truncated or corrupt, "
            "download it again"
        ) from None
    metadata = {k: _plain(v) for k, v in raw_metadata.items()}
    architecture(metadata, path)  # Before the names: another architecture has other tensors.
    weights = rename_tensors(tensors, path)
    config = gguf_config(metadata, weights, path)
    described = f"{path} (GGUF metadata)"
    return Checkpoint(
        config=config,
        weights=weights,
        tokenizer=read_gguf_tokenizer(metadata, path),
        generation_config=gguf_generation_config(metadata),
        source=path,
        files={CONFIG_JSON: described, GENERATION_CONFIG_JSON: described},
    )
