"""``load()``: one call from a source to a model ready to generate.

The result holds the mlx-lm model, the tokenizer, the architecture config and the
resolved :class:`~mlx_gen.loading.generation_config.GenerationConfig`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.tokenizer_utils import TokenizerWrapper

from mlx_gen.loading.architecture import build_model
from mlx_gen.loading.checkpoint import Checkpoint, read_folder
from mlx_gen.loading.cpu_layers import compile_cpu_layers
from mlx_gen.loading.generation_config import (
    CONFIG_JSON,
    GENERATION_CONFIG_JSON,
    GenerationConfig,
    resolve_generation_config,
)
from mlx_gen.loading.gguf.reader import read_gguf
from mlx_gen.loading.sources import resolve_source


@dataclass
class LoadedModel:
    """A model ready to generate.

    Attributes:
        model: The mlx-lm ``nn.Module``; ``model(tokens[None], cache=...)`` gives logits.
        tokenizer: mlx-lm's ``TokenizerWrapper`` (HF tokenizer + streaming detokenizer).
        config: The architecture config (``config.json`` form).
        generation_config: The checkpoint's resolved generation settings.
        source: Where it was loaded from (a folder or a ``.gguf`` file).
    """

    model: nn.Module
    tokenizer: TokenizerWrapper
    config: dict[str, Any]
    generation_config: GenerationConfig
    source: Path

    @property
    def vocab_size(self) -> int:
        """Number of logits the model produces per position."""
        return vocab_size(self.config)


def vocab_size(config: Mapping[str, Any]) -> int:
    """The vocabulary size in an architecture config (``text_config`` is looked into)."""
    size = config.get("vocab_size") or config.get("text_config", {}).get("vocab_size")
    if not isinstance(size, int) or size <= 0:
        raise ValueError(f"config.json: vocab_size={size!r} is invalid (expected a positive int)")
    return size


def read_checkpoint(path: Path) -> Checkpoint:
    """Read a local folder or ``.gguf`` file into a :class:`Checkpoint`."""
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ValueError(
                f"{path}: a model file must be .gguf; otherwise pass the model's folder"
            )
        return read_gguf(path)
    return read_folder(path)


def resolve_checkpoint_config(
    checkpoint: Checkpoint, overrides: Mapping[str, Any] | None = None
) -> GenerationConfig:
    """The :class:`GenerationConfig` of ``checkpoint`` (see that module for precedence)."""
    tok = checkpoint.tokenizer
    return resolve_generation_config(
        config=checkpoint.config,
        generation_config=checkpoint.generation_config,
        tokenizer_eos_token_id=tok.eos_token_id,
        tokenizer_bos_token_id=tok.bos_token_id,
        vocab_size=vocab_size(checkpoint.config),
        overrides=overrides,
        config_name=checkpoint.files.get(CONFIG_JSON, CONFIG_JSON),
        generation_config_name=checkpoint.files.get(GENERATION_CONFIG_JSON, GENERATION_CONFIG_JSON),
    )


def load(
    source: str | os.PathLike[str] | None = None,
    *,
    dtype: str | None = None,
    revision: str | None = None,
    generation_overrides: Mapping[str, Any] | None = None,
) -> LoadedModel:
    """Load a checkpoint with all of its generation settings.

    Args:
        source: A Hugging Face or MLX folder, a ``.gguf`` file, a Hub repo id, or ``None``
            for the embedded SmolLM2 model.
        dtype: Cast floating weights to ``"float16"``, ``"bfloat16"`` or ``"float32"``.
        revision: Hub branch, tag or commit, for repo ids.
        generation_overrides: ``GenerationConfig`` fields that replace the files' values
            (``eos_token_ids`` replaces the whole union).

    Returns:
        The :class:`LoadedModel`; weights are memory-mapped and read on first use.

    Raises:
        FileNotFoundError: The source, its config, weights or tokenizer are missing.
        ValueError: Unknown ``model_type`` (supported ones listed), corrupt files (named),
            a tensor whose shape disagrees with the config, malformed settings.
    """
    checkpoint = read_checkpoint(resolve_source(source, revision=revision))
    generation_config = resolve_checkpoint_config(checkpoint, generation_overrides)
    model = build_model(checkpoint, dtype=dtype)
    if mx.default_device().type == mx.cpu:  # fast ops have no CPU kernels: compile them
        compile_cpu_layers(model)
    return LoadedModel(
        model, checkpoint.tokenizer, checkpoint.config, generation_config, checkpoint.source
    )
