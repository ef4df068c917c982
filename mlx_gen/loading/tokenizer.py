"""Load a checkpoint folder's tokenizer into mlx-lm's ``TokenizerWrapper``.

``tokenizer.json`` (a fast tokenizer) is preferred; a folder with only a SentencePiece
``tokenizer.model`` gets :class:`~mlx_gen.loading.sentencepiece_tokenizer.SentencePieceTokenizer`.
The wrapper adds mlx-lm's streaming detokenizer and chat-template handling.
"""

from __future__ import annotations

from pathlib import Path

from mlx_lm.tokenizer_utils import NaiveStreamingDetokenizer, TokenizerWrapper
from mlx_lm.tokenizer_utils import load as load_hf_tokenizer

from mlx_gen.loading.generation_config import read_json
from mlx_gen.loading.sentencepiece_tokenizer import SentencePieceTokenizer


def load_tokenizer(folder: Path) -> TokenizerWrapper:
    """Return the tokenizer of a checkpoint folder.

    Raises:
        FileNotFoundError: Neither ``tokenizer.json`` nor ``tokenizer.model`` is present.
        ValueError: A tokenizer file cannot be parsed (the file is named).
    """
    if (folder / "tokenizer.json").exists():
        try:
            return load_hf_tokenizer(folder)
        except (OSError, ValueError) as e:
            raise ValueError(
                f"{folder / 'tokenizer.json'}: cannot load the tokenizer ({e})"
            ) from None
    if (folder / "tokenizer.model").exists():
        settings_path = folder / "tokenizer_config.json"
        settings = read_json(settings_path) if settings_path.exists() else {}
        spm_tokenizer = SentencePieceTokenizer(
            folder / "tokenizer.model",
            add_bos_token=settings.get("add_bos_token", True),
            chat_template=settings.get("chat_template"),
        )
        return TokenizerWrapper(spm_tokenizer, NaiveStreamingDetokenizer)
    raise FileNotFoundError(
        f"{folder}: no tokenizer found (expected tokenizer.json or a SentencePiece tokenizer.model)"
    )
