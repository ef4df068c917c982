"""A checkpoint as read from disk, before a model is built from it.

Every source (a Hugging Face folder, an MLX-converted folder, a GGUF file) is read
into one :class:`Checkpoint`: the architecture config in ``config.json`` form, the
weights under mlx-lm's parameter names, the tokenizer, and the raw generation
settings. :mod:`mlx_gen.loading.architecture` turns it into a model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import mlx.core as mx
from mlx_lm.tokenizer_utils import TokenizerWrapper

from mlx_gen.loading.config_validation import check_config
from mlx_gen.loading.generation_config import GENERATION_CONFIG_JSON, read_json
from mlx_gen.loading.tokenizer import load_tokenizer


@dataclass
class Checkpoint:
    """Everything read from one source.

    Attributes:
        config: The architecture config as ``config.json`` holds it (``model_type`` etc.;
            a quantized checkpoint has ``quantization``).
        weights: Parameters under mlx-lm's names (``model.layers.0.self_attn.q_proj.weight``).
        tokenizer: The tokenizer, wrapped with mlx-lm's streaming detokenizer.
        generation_config: The parsed ``generation_config.json`` (or the GGUF equivalent),
            ``None`` when the source has none.
        source: The path the checkpoint was read from, for messages.
        files: Names used in error messages for the config files, e.g.
            ``{"config.json": "/models/x/config.json"}``.
    """

    config: dict[str, Any]
    weights: dict[str, mx.array]
    tokenizer: TokenizerWrapper
    generation_config: dict[str, Any] | None
    source: Path
    files: Mapping[str, str] = field(default_factory=dict)


def _load_safetensors(path: Path) -> dict[str, mx.array]:
    """Read one safetensors file; a truncated or corrupt file names itself."""
    try:
        return mx.load(str(path))
    except Exception as e:  # MLX raises RuntimeError/ValueError with internal wording.
        raise ValueError(
            f"{path}: cannot read safetensors weights ({e}); the file is truncated or corrupt, "
            "download or convert it again"
        ) from None


def _shard_name(name: Any, *, index: Path) -> str:
    """A shard file named by ``weight_map``: a relative ``.safetensors`` path inside the folder.

    Raises:
        ValueError: Not a string, not ``.safetensors``, absolute, or escaping the folder
            with ``..`` (weights are read from the model folder only).
    """
    if not isinstance(name, str) or not name.endswith(".safetensors"):
        raise ValueError(
            f"{index}: weight_map value {name!r} is invalid (expected a .safetensors file name)"
        )
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if PurePosixPath(name).is_absolute() or Path(name).is_absolute() or ".." in parts:
        raise ValueError(
            f"{index}: weight_map value {name!r} points outside the model folder; shard paths "
            "must be relative and inside it"
        )
    return name


def _weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a folder, from the index when there is one."""
    index = folder / "model.safetensors.index.json"
    if index.exists():
        weight_map = read_json(index).get("weight_map", {})
        if not isinstance(weight_map, dict):
            raise ValueError(
                f"{index}: weight_map is a {type(weight_map).__name__} (expected an object "
                "mapping tensor names to shard file names)"
            )
        names = sorted({_shard_name(n, index=index) for n in weight_map.values()})
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise FileNotFoundError(f"{index} lists shard(s) that are missing: {missing}")
        return [folder / n for n in names]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(
            f"{folder}: no *.safetensors weights found (expected model.safetensors or shards "
            "listed in model.safetensors.index.json)"
        )
    return files


def read_folder(folder: Path) -> Checkpoint:
    """Read a Hugging Face or MLX-converted checkpoint folder.

    Args:
        folder: A folder with ``config.json``, safetensors weights, tokenizer files and
            optionally ``generation_config.json``.

    Returns:
        The checkpoint, weights loaded lazily (memory-mapped by MLX).

    Raises:
        FileNotFoundError: ``config.json``, the weights or the tokenizer are missing.
        ValueError: A file is malformed, a config value is invalid or not backed by the
            weights, or the index names a shard outside the folder; the message names it.
    """
    config_path = folder / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(
            f"{folder}: no config.json; expected a Hugging Face or MLX model folder "
            "(config.json, *.safetensors, tokenizer files) or a .gguf file"
        )
    config = read_json(config_path)
    gen_path = folder / GENERATION_CONFIG_JSON
    generation_config = read_json(gen_path) if gen_path.exists() else None
    weights: dict[str, mx.array] = {}
    for path in _weight_files(folder):
        weights.update(_load_safetensors(path))
    # Before the tokenizer: transformers parses config.json too, and crashes on bad values.
    check_config(config, weights, source=str(config_path))
    return Checkpoint(
        config=config,
        weights=weights,
        tokenizer=load_tokenizer(folder),
        generation_config=generation_config,
        source=folder,
        files={"config.json": str(config_path), GENERATION_CONFIG_JSON: str(gen_path)},
    )


def config_text(config: Mapping[str, Any]) -> str:
    """``config`` as the sorted, indented JSON that converted folders carry."""
    return json.dumps(dict(sorted(config.items())), indent=2) + "\n"
