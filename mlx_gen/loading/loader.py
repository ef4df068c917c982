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
from mlx_gen.loading.dequantize import dequantize_layers
from mlx_gen.loading.distributed import distributed_group, shard_model
from mlx_gen.loading.generation_config import (
    CONFIG_JSON,
    GENERATION_CONFIG_JSON,
    GenerationConfig,
    resolve_generation_config,
)
from mlx_gen.loading.gguf.reader import read_gguf
from mlx_gen.loading.sources import resolve_source
from mlx_gen.loading.tokenizer import CheckedTokenizer

QUANTIZATION_KEYS = ("quantization", "quantization_config")


@dataclass
class LoadedModel:
    """A model ready to generate.

    Attributes:
        model: The mlx-lm ``nn.Module``; ``model(tokens[None], cache=...)`` gives logits.
        tokenizer: mlx-lm's ``TokenizerWrapper`` (HF tokenizer + streaming detokenizer).
        config: The architecture config (``config.json`` form).
        generation_config: The checkpoint's resolved generation settings.
        source: Where it was loaded from (a folder or a ``.gguf`` file).
        group: The ``mx.distributed`` group the model is sharded over (tensor
            parallel, one rank per process), ``None`` when this process holds it whole.
    """

    model: nn.Module
    tokenizer: TokenizerWrapper
    config: dict[str, Any]
    generation_config: GenerationConfig
    source: Path
    group: mx.distributed.Group | None = None

    @property
    def rank(self) -> int:
        """This process's rank in :attr:`group` (0 when not distributed); rank 0 prints."""
        return 0 if self.group is None else self.group.rank()

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


def read_checkpoint(path: Path, *, gguf_precision: str = "exact") -> Checkpoint:
    """Read a local folder or ``.gguf`` file into a :class:`Checkpoint`.

    ``gguf_precision`` (``"exact"``/``"compact"``) applies to GGUF files only; see
    :func:`~mlx_gen.loading.gguf.reader.read_gguf`. Its tokenizer is a
    :class:`~mlx_gen.loading.tokenizer.CheckedTokenizer`: chat templates render in a
    sandbox, and a failing one is a ``ValueError`` naming its file.
    """
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ValueError(
                f"{path}: a model file must be .gguf; otherwise pass the model's folder"
            )
        checkpoint = read_gguf(path, precision=gguf_precision)
        if not isinstance(checkpoint.tokenizer, CheckedTokenizer):
            source = f"{path} (tokenizer.chat_template)"
            checkpoint.tokenizer = CheckedTokenizer.wrap(checkpoint.tokenizer, source)
        return checkpoint
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
    gguf_precision: str = "exact",
    dequantize: bool = False,
    distributed: bool | None = None,
) -> LoadedModel:
    """Load a checkpoint with all of its generation settings.

    Args:
        source: A Hugging Face or MLX folder, a ``.gguf`` file, a Hub repo id, or ``None``
            for the embedded SmolLM2 model.
        dtype: Cast floating weights to ``"float16"``, ``"bfloat16"`` or ``"float32"``.
        revision: Hub branch, tag or commit, for repo ids.
        generation_overrides: ``GenerationConfig`` fields that replace the files' values
            (``eos_token_ids`` replaces the whole union).
        gguf_precision: For a ``.gguf`` source: ``"exact"`` keeps every weight as
            llama.cpp decodes it (float32 scales); ``"compact"`` uses float16 scales and
            re-quantizes Q6_K/Q2_K layers to 8 bits (less memory, about 1e-3 relative
            weight error). Ignored for folders.
        dequantize: Replace quantized layers by dense float32 ones after loading
            (faster on MLX's CPU backend, 4 bytes per weight).
        distributed: Tensor parallelism over ``mx.distributed`` (processes started by
            ``mlx.launch``): ``None`` (default) shards when this process is one of
            several ranks, ``True`` always uses ``mx.distributed.init()``'s group,
            ``False`` never shards. Sharded, each rank reads only its slice of every
            projection (see :mod:`mlx_gen.loading.distributed`).

    Returns:
        The :class:`LoadedModel`; weights are memory-mapped and read on first use
        (when sharded, this rank's shard is read before returning).

    Raises:
        FileNotFoundError: The source, its config, weights or tokenizer are missing.
        ValueError: Unknown ``model_type`` (supported ones listed), corrupt files (named),
            a tensor whose shape disagrees with the config, malformed settings; when
            sharding, an architecture without ``shard`` or with indivisible heads.
    """
    path = resolve_source(source, revision=revision)
    checkpoint = read_checkpoint(path, gguf_precision=gguf_precision)
    generation_config = resolve_checkpoint_config(checkpoint, generation_overrides)
    model = build_model(checkpoint, dtype=dtype)
    group = distributed_group(distributed)
    if group is not None:
        checkpoint.weights.clear()  # drop the unsharded tensors unread: only slices are read
        shard_model(model, group, config=checkpoint.config, source=str(checkpoint.source))
    config = checkpoint.config
    if dequantize and dequantize_layers(model):
        config = {k: v for k, v in config.items() if k not in QUANTIZATION_KEYS}
    if mx.default_device().type == mx.cpu:  # fast ops have no CPU kernels: compile them
        compile_cpu_layers(model)
    return LoadedModel(
        model, checkpoint.tokenizer, config, generation_config, checkpoint.source, group
    )
