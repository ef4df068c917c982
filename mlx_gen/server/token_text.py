"""Each token's own bytes and text, as OpenAI's logprob entries report them.

A token's ``bytes`` are its exact UTF-8 bytes (a byte-level BPE piece mapped back
through GPT-2's byte table, a SentencePiece ``<0xNN>`` byte token, ``▁`` as a space), so
a character split over several tokens is rebuilt by joining them; ``token`` is those
bytes decoded with replacement characters where a token holds part of a character.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from mlx_lm.tokenizer_utils import BPEStreamingDetokenizer


@lru_cache(maxsize=1)
def _byte_table() -> dict[str, int]:
    """GPT-2's byte-level alphabet: the character standing for each byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    table, extra = {chr(b): b for b in printable}, 0
    for b in range(256):
        if chr(b) not in table or table[chr(b)] != b:
            table[chr(256 + extra)] = b
            extra += 1
    return table


class TokenText:
    """Bytes and display text of token ids for one tokenizer (cached per id).

    Args:
        tokenizer: mlx-lm's ``TokenizerWrapper``.

    >>> from types import SimpleNamespace
    >>> tok = SimpleNamespace(convert_ids_to_tokens=lambda i: ["▁the", "<0x0A>"][i],
    ...                       decode=lambda ids: "", detokenizer=None)
    >>> [TokenText(tok).bytes_of(i) for i in (0, 1)]
    [b' the', b'\\n']
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.byte_level = isinstance(
            getattr(tokenizer, "detokenizer", None), BPEStreamingDetokenizer
        )
        self._cache: dict[int, tuple[bytes, str]] = {}

    def bytes_of(self, token: int) -> bytes:
        """The token's UTF-8 bytes."""
        return self._entry(token)[0]

    def text_of(self, token: int) -> str:
        """The token's text (``\\ufffd`` for a partial character)."""
        return self._entry(token)[1]

    def _entry(self, token: int) -> tuple[bytes, str]:
        if token not in self._cache:
            raw = self._bytes(token)
            self._cache[token] = (raw, raw.decode("utf-8", errors="replace"))
        return self._cache[token]

    def _bytes(self, token: int) -> bytes:
        piece = self.tokenizer.convert_ids_to_tokens(token)
        if not isinstance(piece, str):
            return self.tokenizer.decode([token]).encode("utf-8")
        if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            return bytes([int(piece[3:5], 16)])
        table = _byte_table()
        if self.byte_level and all(c in table for c in piece):
            return bytes(table[c] for c in piece)
        return piece.replace("\u2581", " ").encode("utf-8")
