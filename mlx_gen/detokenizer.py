"""Streaming detokenizers whose joined output equals ``tokenizer.decode`` of the ids.

mlx-lm's byte-level BPE detokenizer drops the leading space of the first token, which
suits a fresh answer but not a continuation (``"Once upon a time"`` + ``" there"``
streams ``"there"``). Byte-level BPE encodes that space as real text, so mlx_gen keeps it.
"""

from __future__ import annotations

from typing import Any

from mlx_lm.tokenizer_utils import (
    BPEStreamingDetokenizer,
    NaiveStreamingDetokenizer,
    SPMStreamingDetokenizer,
    StreamingDetokenizer,
)

from mlx_gen.loading.sentencepiece_tokenizer import SentencePieceTokenizer


class SpacePreservingBPEDetokenizer(BPEStreamingDetokenizer):
    """mlx-lm's BPE streaming detokenizer without the first-token space trimming.

    >>> from types import SimpleNamespace
    >>> tok = SimpleNamespace(convert_ids_to_tokens=lambda ids: ["Ġthere", "!"][: len(ids)])
    >>> d = SpacePreservingBPEDetokenizer.__new__(SpacePreservingBPEDetokenizer)
    >>> d.tokenmap = ["Ġthere", "!"]; d.reset(); d.add_token(0); d.add_token(1); d.finalize()
    >>> d.text
    ' there!'
    """

    def _maybe_trim_space(self, current_text: str) -> str:
        return current_text


def streaming_detokenizer(
    tokenizer: Any, *, keep_leading_space: bool = False
) -> StreamingDetokenizer:
    """A fresh streaming detokenizer for an mlx-lm ``TokenizerWrapper``.

    Args:
        tokenizer: The model's tokenizer wrapper.
        keep_leading_space: Keep the first token's leading space even for SentencePiece
            tokenizers, whose decoders drop it: under a constraint the text must be
            exactly the bytes the grammar matched (``" a"`` stays ``" a"``).
    """
    detokenizer = tokenizer.detokenizer  # a reset copy
    if keep_leading_space and hasattr(detokenizer, "trim_space"):
        detokenizer.trim_space = False
    inner = getattr(tokenizer, "_tokenizer", None)
    if keep_leading_space and isinstance(detokenizer, NaiveStreamingDetokenizer):
        if isinstance(inner, SentencePieceTokenizer):  # its decode() drops the space
            return SPMStreamingDetokenizer(inner, trim_space=False)
    if type(detokenizer) is BPEStreamingDetokenizer:
        # Re-class the copy rather than build a new one: building re-reads the whole
        # vocabulary (tens of ms for 50k tokens) on every call.
        detokenizer.__class__ = SpacePreservingBPEDetokenizer
    return detokenizer
