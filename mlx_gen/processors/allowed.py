"""Restrict generation to a fixed set of token ids."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import mlx.core as mx

from mlx_gen.processors.context import ProcessorContext
from mlx_gen.processors.token_ids import TokenSet, check_vocab_size, token_id_tuple


@dataclass(frozen=True)
class AllowedTokenIds:
    """Keep the logits of ``ids`` and set every other id to ``-inf``.

    Args:
        ids: The only token ids that may be generated; duplicates are dropped.
        vocab_size: Optional vocabulary size: checks the ids and precomputes the
            ``(V,)`` mask once (otherwise the mask is rebuilt by a scatter each step).

    Raises:
        ValueError: ``ids`` is empty (nothing could be generated), or an id is not an
            int, is negative, or is ``>= vocab_size``.

    >>> import mlx.core as mx
    >>> from mlx_gen.processors import AllowedTokenIds, ProcessorContext
    >>> ctx = ProcessorContext(mx.array([1]), mx.array([], dtype=mx.int32), step=0)
    >>> AllowedTokenIds([1, 2])(mx.ones((1, 4)), ctx).tolist()
    [[-inf, 1.0, 1.0, -inf]]
    """

    ids: Sequence[int]
    vocab_size: int | None = None
    _tokens: TokenSet = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        vocab_size = check_vocab_size(self.vocab_size, "AllowedTokenIds")
        ids = token_id_tuple(self.ids, vocab_size, "AllowedTokenIds")
        if not ids:
            raise ValueError(
                "AllowedTokenIds: ids=[] is invalid: expected at least one token id to allow"
            )
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "_tokens", TokenSet(ids, vocab_size))

    def __call__(self, logits: mx.array, ctx: ProcessorContext) -> mx.array:
        return self._tokens.keep_only(logits)
