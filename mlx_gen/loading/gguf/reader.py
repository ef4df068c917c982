"""Read a llama.cpp GGUF file into a :class:`~mlx_gen.loading.checkpoint.Checkpoint`.

The header is walked by :mod:`~mlx_gen.loading.gguf.header`, each tensor is packed by
:mod:`~mlx_gen.loading.gguf.tensors` from the memory-mapped file (``mx.load`` is never
used: it dequantizes Q4_K wrongly), names and config keys come from the tables in
:mod:`~mlx_gen.loading.gguf.architectures`, and the tokenizer from
:mod:`~mlx_gen.loading.gguf.tokenizer`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from mlx_gen.loading.checkpoint import Checkpoint
from mlx_gen.loading.generation_config import CONFIG_JSON, GENERATION_CONFIG_JSON
from mlx_gen.loading.gguf.architectures import (
    ARCHITECTURES,
    GLOBAL_TENSORS,
    Architecture,
    unpermute_rows,
)
from mlx_gen.loading.gguf.config import architecture, check_config, gguf_config
from mlx_gen.loading.gguf.header import TensorInfo, read_header
from mlx_gen.loading.gguf.rope import llama3_rope_scaling
from mlx_gen.loading.gguf.tensors import PRECISIONS, check_type, load_tensor
from mlx_gen.loading.gguf.tokenizer import CONTROL, USER_DEFINED, read_gguf_tokenizer

_TENSOR_NAME = re.compile(r"(?:blk\.(\d+)\.)?(\w+)\.(weight|bias)")
# End-of-turn control tokens llama.cpp also ends generation on, when the vocabulary has them.
END_OF_TURN_TOKENS = ("<end_of_turn>", "<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<|end|>", "<EOT>")


def mlx_name(name: str, spec: Architecture, path: Path) -> tuple[str, str] | None:
    """``blk.0.attn_q.weight`` -> (``model.layers.0.self_attn.q_proj``, ``weight``);
    ``None`` for a name the architecture does not know."""
    match = _TENSOR_NAME.fullmatch(name)
    block, stem, suffix = match.groups() if match else (None, None, None)
    table = GLOBAL_TENSORS if block is None else spec.block_tensors
    if stem not in table:
        return None
    prefix = "" if block is None else f"model.layers.{block}."
    return f"{prefix}{table[stem]}", str(suffix)


def _check_names(tensors: list[TensorInfo], spec: Architecture, path: Path) -> None:
    unknown = [t.name for t in tensors if t.name != "rope_freqs.weight"]
    unknown = [n for n in unknown if mlx_name(n, spec, path) is None]
    if unknown:
        known = [*GLOBAL_TENSORS, *(f"blk.N.{k}" for k in spec.block_tensors)]
        raise ValueError(
            f"{path}: unsupported tensor name(s) {unknown[:5]} (of {len(unknown)}); "
            f"known: {', '.join(known)}"
        )


def _heads(metadata: dict[str, Any], arch: str) -> dict[str, int]:
    """Heads per q/k projection, for undoing llama.cpp's row permutation."""
    heads = metadata.get(f"{arch}.attention.head_count")
    return {"q_proj": heads, "k_proj": metadata.get(f"{arch}.attention.head_count_kv", heads)}


def _unpermute(arrays: dict[str, mx.array], heads: int, name: str, path: Path) -> None:
    rows = arrays["weight"].shape[0]
    if not isinstance(heads, int) or heads <= 0 or rows % (2 * heads):
        raise ValueError(f"{path}: tensor {name} has {rows} rows, not 2 x {heads} heads' worth")
    order = mx.array(unpermute_rows(rows, heads))
    for key, value in arrays.items():
        arrays[key] = value[order]


def read_weights(
    path: Path,
    tensors: list[TensorInfo],
    spec: Architecture,
    precision: str,
    heads: dict[str, int] | None = None,
) -> tuple[dict[str, mx.array], dict[str, dict[str, int]], np.ndarray | None]:
    """Every tensor under its mlx-lm name, the quantized layers' ``{bits, group_size}``,
    and Llama 3's ``rope_freqs`` factors (``None`` when absent). ``heads`` (q/k heads)
    is needed when ``spec.unpermute_qk``."""
    data = np.memmap(path, np.uint8, mode="r")
    weights, layers, rope_freqs = {}, {}, None
    for info in tensors:
        # The embedding's dequantized rows set the activations' dtype: float16 scales there
        # would run the whole model in float16 (Gemma 3 270M: KL 0.17 to llama.cpp).
        exact = info.name == "token_embd.weight"
        loaded = load_tensor(data, info, "exact" if exact else precision)
        if info.name == "rope_freqs.weight":
            rope_freqs = np.array(loaded.arrays["weight"].astype(mx.float32))
            continue
        module, suffix = mlx_name(info.name, spec, path) or ("", "")
        projection = module.rsplit(".", 1)[-1]
        if spec.unpermute_qk and heads and projection in heads:  # weight or bias rows
            _unpermute(loaded.arrays, heads[projection], info.name, path)
        if suffix == "bias":
            weights[f"{module}.bias"] = loaded.arrays["weight"]
            continue
        for key, value in loaded.arrays.items():
            weights[f"{module}.{key}"] = value
        if loaded.bits is not None:
            layers[module] = {"group_size": loaded.group_size, "bits": loaded.bits}
    if spec.norm_plus_one:  # llama.cpp's converter stores Gemma's norms as 1 + w.
        for key in [k for k in weights if k.endswith("norm.weight")]:
            weights[key] = weights[key] - 1
    return weights, layers, rope_freqs


def gguf_generation_config(metadata: dict[str, Any]) -> dict[str, Any]:
    """``generation_config.json`` equivalent: special ids from ``tokenizer.ggml.*``.

    ``eos_token_id`` is a list when the file also names end-of-turn/end-of-message
    tokens (``eot_token_id``/``eom_token_id``) or holds control tokens llama.cpp ends
    generation on (:data:`END_OF_TURN_TOKENS`, e.g. Gemma's ``<end_of_turn>``).
    """
    out: dict[str, Any] = {}
    eos = [metadata.get(f"tokenizer.ggml.{k}_token_id") for k in ("eos", "eot", "eom")]
    tokens = metadata.get("tokenizer.ggml.tokens") or []
    types = metadata.get("tokenizer.ggml.token_type") or []
    eos += [
        i
        for i, t in enumerate(tokens)
        if t in END_OF_TURN_TOKENS and i < len(types) and types[i] in (CONTROL, USER_DEFINED)
    ]
    eos = list(dict.fromkeys(i for i in eos if isinstance(i, int)))
    if eos:
        out["eos_token_id"] = eos[0] if len(eos) == 1 else eos
    for name, key in [("bos_token_id", "bos_token_id"), ("pad_token_id", "padding_token_id")]:
        if isinstance(metadata.get(f"tokenizer.ggml.{key}"), int):
            out[name] = metadata[f"tokenizer.ggml.{key}"]
    return out


def read_gguf(path: Path, *, precision: str = "exact") -> Checkpoint:
    """Read a GGUF file (llama.cpp format) into a :class:`Checkpoint`.

    Args:
        path: A ``.gguf`` file; tensor types in
            :data:`~mlx_gen.loading.gguf.tensors.SUPPORTED_TYPES`.
        precision: ``"exact"`` (float32 scales, every weight as llama.cpp decodes it) or
            ``"compact"`` (float16 scales, Q6_K/Q2_K re-quantized to 8 bits); see
            :mod:`mlx_gen.loading.gguf.tensors`.

    Returns:
        The checkpoint: config and generation settings from the metadata, tensors under
        mlx-lm names (quantized ones as ``weight``/``scales``/``biases``), the tokenizer.

    Raises:
        ValueError: The file is truncated or corrupt, holds an unsupported tensor type,
            architecture or tensor name, or ``precision`` is invalid; the file and the
            value are named.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"gguf_precision={precision!r} is invalid; valid: {', '.join(PRECISIONS)}")
    header = read_header(path)
    metadata = header.metadata
    spec = ARCHITECTURES[architecture(metadata, path)]
    for info in header.tensors:
        check_type(info, path)
    _check_names(header.tensors, spec, path)
    heads = _heads(metadata, metadata["general.architecture"])
    weights, layers, rope_freqs = read_weights(path, header.tensors, spec, precision, heads)
    config = gguf_config(metadata, weights, layers, path)
    check_config(config, weights, path)
    if rope_freqs is not None:
        config["rope_scaling"] = llama3_rope_scaling(rope_freqs, config, path)
    if spec.chat_template and not metadata.get("tokenizer.chat_template"):
        metadata = {**metadata, "tokenizer.chat_template": spec.chat_template}
    described = f"{path} (GGUF metadata)"
    return Checkpoint(
        config=config,
        weights=weights,
        tokenizer=read_gguf_tokenizer(metadata, path),
        generation_config=gguf_generation_config(metadata),
        source=path,
        files={CONFIG_JSON: described, GENERATION_CONFIG_JSON: described},
    )
