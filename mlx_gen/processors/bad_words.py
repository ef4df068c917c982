"""Ban token sequences ("bad words"), given as ids or as text to tokenize."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import mlx.core as mx

from mlx_gen.processors.bias import SequenceBias
from mlx_gen.processors.context import ProcessorContext
from mlx_gen.processors.token_ids import check_vocab_size, token_sequence


class TextTokenizer(Protocol):
    """The part of a Hugging Face tokenizer (or mlx-lm's wrapper) that ``from_strings`` uses."""

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, token_ids: list[int]) -> str: ...


@dataclass(frozen=True)
class BadWords:
    """Never generate any of ``sequences`` (transformers' ``bad_words_ids``).

    A 1-token sequence is banned at every step. A longer one bans its last token
    whenever the context (``ctx.context_ids``: prompt + generated) ends with the rest
    of it, so the whole sequence can never be completed. Same matching as
    ``SequenceBias`` with a ``-inf`` bias.

    Token ids are tokenization-specific: the same text split differently is not
    caught. ``from_strings`` adds the usual variants.

    Args:
        sequences: Token-id sequences to ban; duplicates are dropped.
        vocab_size: Optional vocabulary size: checks the ids (see ``SequenceBias``).

    Raises:
        ValueError: A sequence is empty or holds a bad id.

    >>> import mlx.core as mx
    >>> from mlx_gen.processors import BadWords, ProcessorContext
    >>> ctx = ProcessorContext(mx.array([3, 1]), mx.array([], dtype=mx.int32), step=0)
    >>> BadWords([[0], [1, 2]])(mx.zeros((1, 4)), ctx).tolist()
    [[-inf, 0.0, -inf, 0.0]]
    """

    sequences: Sequence[Sequence[int]]
    vocab_size: int | None = None
    _bias: SequenceBias = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        vocab_size = check_vocab_size(self.vocab_size, "BadWords")
        if isinstance(self.sequences, (str, bytes)) or not isinstance(self.sequences, Iterable):
            raise ValueError(
                "BadWords: sequences="
                f"{self.sequences!r} is invalid: expected a list of token-id sequences"
            )
        checked = (token_sequence(seq, vocab_size, "BadWords") for seq in self.sequences)
        sequences = tuple(dict.fromkeys(checked))
        object.__setattr__(self, "sequences", sequences)
        bias = SequenceBias(dict.fromkeys(sequences, -mx.inf), vocab_size)
        object.__setattr__(self, "_bias", bias)

    def __call__(self, logits: mx.array, ctx: ProcessorContext) -> mx.array:
        return self._bias(logits, ctx)

    @classmethod
    def from_strings(
        cls, words: Iterable[str], tokenizer: TextTokenizer, vocab_size: int | None = None
    ) -> BadWords:
        """Ban each word under the tokenizations it usually appears with.

        For each word (leading spaces removed) the variants are
        ``encode(word)`` and ``encode(" " + word)`` (``add_special_tokens=False``).
        Some SentencePiece tokenizers encode ``" word"`` as a lone space marker followed
        by ``"▁word"``; for every variant, its form with leading tokens that decode to
        whitespace only removed is added too. Capitalised forms are not added: pass
        them as words. Duplicate sequences are dropped.

        Args:
            words: The words or phrases to ban.
            tokenizer: Anything with ``encode(text, add_special_tokens=False)`` returning
                ids and ``decode(ids)`` (a Hugging Face tokenizer or mlx-lm's wrapper).
            vocab_size: Passed on to the constructor.

        Returns:
            A ``BadWords`` over every variant of every word.

        Raises:
            ValueError: ``words`` is a single string, or a word is not a string, is
                blank, or encodes to no tokens.
        """
        if isinstance(words, str):
            raise ValueError(
                f"BadWords.from_strings: words={words!r} is invalid: expected a list of strings"
            )
        sequences: list[tuple[int, ...]] = []
        for word in words:
            if not isinstance(word, str) or not word.strip():
                raise ValueError(
                    f"BadWords.from_strings: word {word!r} is invalid: expected text with "
                    "a non-space character (a blank word bans nothing)"
                )
            bare = word.lstrip()
            for text in (bare, " " + bare):
                ids = tuple(int(i) for i in tokenizer.encode(text, add_special_tokens=False))
                if not ids:
                    raise ValueError(
                        f"BadWords.from_strings: {text!r} encodes to no tokens: cannot ban it"
                    )
                sequences.append(ids)
                sequences.append(_drop_leading_blank(ids, tokenizer))
        return cls([seq for seq in sequences if seq], vocab_size)


def _drop_leading_blank(ids: tuple[int, ...], tokenizer: TextTokenizer) -> tuple[int, ...]:
    """``ids`` without the leading tokens that decode to whitespace only (may become empty)."""
    start = 0
    while start < len(ids) and not tokenizer.decode([ids[start]]).strip():
        start += 1
    return ids[start:]
