"""A tokenizer for checkpoints that ship only a SentencePiece ``tokenizer.model``.

transformers' conversion of such files to a fast tokenizer mishandles repeated and
leading spaces for some models, so mlx_gen calls ``sentencepiece`` directly and
exposes the small part of the Hugging Face tokenizer interface that mlx-lm's
``TokenizerWrapper`` and mlx_gen use.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sentencepiece as spm

from mlx_gen.loading.chat_template import render_chat_template


class SentencePieceTokenizer:
    """Hugging Face-style tokenizer over a SentencePiece model file.

    Args:
        model_file: Path to ``tokenizer.model``.
        add_bos_token: Put the BOS id before encoded text when ``add_special_tokens``.
        chat_template: A Jinja chat template (from ``tokenizer_config.json``), or ``None``;
            it is rendered in a sandbox (:mod:`mlx_gen.loading.chat_template`).
        template_source: The file the template came from, named in errors (default: the
            folder's ``tokenizer_config.json``).

    Raises:
        ValueError: The file is not a SentencePiece model (the path is named).
    """

    def __init__(
        self,
        model_file: Path,
        *,
        add_bos_token: bool = True,
        chat_template: str | None = None,
        template_source: str | None = None,
    ) -> None:
        self.model_file = Path(model_file)
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.Load(str(self.model_file))
        except (OSError, RuntimeError) as e:
            raise ValueError(f"{model_file}: not a valid SentencePiece model ({e})") from None
        self.add_bos_token = add_bos_token
        self.chat_template = chat_template
        self.template_source = template_source or str(
            self.model_file.parent / "tokenizer_config.json"
        )
        self.bos_token_id = self._optional(self._sp.bos_id())
        self.eos_token_id = self._optional(self._sp.eos_id())
        self.pad_token_id = self._optional(self._sp.pad_id())
        self.unk_token_id = self._optional(self._sp.unk_id())
        self.bos_token = self._piece(self.bos_token_id)
        self.eos_token = self._piece(self.eos_token_id)
        self.init_kwargs: dict[str, Any] = {}

    @staticmethod
    def _optional(i: int) -> int | None:
        return None if i < 0 else i

    def _piece(self, i: int | None) -> str | None:
        return None if i is None else self._sp.IdToPiece(i)

    @property
    def vocab_size(self) -> int:
        """Number of pieces in the model."""
        return self._sp.GetPieceSize()

    def __len__(self) -> int:
        return self.vocab_size

    def get_vocab(self) -> dict[str, int]:
        """Piece string → id."""
        return {self._sp.IdToPiece(i): i for i in range(self.vocab_size)}

    def encode(self, text: str, add_special_tokens: bool = True, **_: Any) -> list[int]:
        """Token ids of ``text`` (BOS first when ``add_special_tokens`` and the model adds it)."""
        ids = list(self._sp.EncodeAsIds(text))
        if add_special_tokens and self.add_bos_token and self.bos_token_id is not None:
            ids = [self.bos_token_id, *ids]
        return ids

    def decode(self, ids: Sequence[int] | int, skip_special_tokens: bool = False, **_: Any) -> str:
        """Text of ``ids``; control pieces (BOS/EOS) decode to nothing, as in SentencePiece."""
        ids = [ids] if isinstance(ids, int) else [int(i) for i in ids]
        return self._sp.DecodeIds(ids)

    def convert_ids_to_tokens(self, ids: Sequence[int] | int) -> list[str] | str:
        """Piece strings of ``ids``."""
        if isinstance(ids, int):
            return self._sp.IdToPiece(ids)
        return [self._sp.IdToPiece(int(i)) for i in ids]

    def convert_tokens_to_ids(self, tokens: Sequence[str] | str) -> list[int] | int:
        """Ids of piece strings."""
        if isinstance(tokens, str):
            return self._sp.PieceToId(tokens)
        return [self._sp.PieceToId(t) for t in tokens]

    def apply_chat_template(
        self,
        messages: list[dict[str, str]],
        tokenize: bool = True,
        add_generation_prompt: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Render ``messages`` with the chat template, in a sandbox (as transformers does).

        Raises:
            ValueError: The checkpoint has no chat template, or the template is blocked,
                does not parse or raises (its file is named).
        """
        if self.chat_template is None:
            raise ValueError(f"{self.model_file.parent}: the tokenizer has no chat_template")
        variables = {k: v for k, v in kwargs.items() if k != "return_dict"}
        variables.setdefault("bos_token", self.bos_token or "")
        variables.setdefault("eos_token", self.eos_token or "")
        text = render_chat_template(
            self.chat_template,
            messages,
            source=self.template_source,
            add_generation_prompt=add_generation_prompt,
            variables=variables,
        )
        return self.encode(text, add_special_tokens=False) if tokenize else text

    def save_pretrained(self, folder: str | Path) -> None:
        """Copy ``tokenizer.model`` into ``folder`` (``tokenizer_config.json`` is the caller's)."""
        shutil.copyfile(self.model_file, Path(folder) / "tokenizer.model")
