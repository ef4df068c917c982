"""Processors that ban fixed token ids: always, at the first steps, or until a minimum length.

All three count steps with ``ctx.step`` (the index of the token about to be
generated), never with the prompt length, so they behave the same whether or not
part of the prompt came from a cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import mlx.core as mx

from mlx_gen.processors.context import ProcessorContext
from mlx_gen.processors.token_ids import TokenSet, check_vocab_size, token_id_tuple


@dataclass(frozen=True)
class SuppressTokens:
    """Ban ``ids`` at every step (transformers' ``suppress_tokens``).

    Each listed id gets ``-inf``; every other logit is returned unchanged.

    Args:
        ids: Token ids to ban; duplicates are dropped, an empty list is a no-op.
        vocab_size: Optional vocabulary size: checks the ids and makes each step a
            single ``mx.where`` on a precomputed mask.

    Raises:
        ValueError: An id is not an int, is negative, or is ``>= vocab_size``.

    >>> import mlx.core as mx
    >>> from mlx_gen.processors import ProcessorContext, SuppressTokens
    >>> ctx = ProcessorContext(mx.array([1, 2]), mx.array([], dtype=mx.int32), step=0)
    >>> SuppressTokens([0, 3], vocab_size=4)(mx.zeros((1, 4)), ctx).tolist()
    [[-inf, 0.0, 0.0, -inf]]
    """

    ids: Sequence[int]
    vocab_size: int | None = None
    _tokens: TokenSet = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        vocab_size = check_vocab_size(self.vocab_size, "SuppressTokens")
        ids = token_id_tuple(self.ids, vocab_size, "SuppressTokens")
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "_tokens", TokenSet(ids, vocab_size))

    def __call__(self, logits: mx.array, ctx: ProcessorContext) -> mx.array:
        return self._tokens.ban(logits)


@dataclass(frozen=True)
class BeginSuppressTokens:
    """Ban ``ids`` while ``ctx.step < steps``: at the first ``steps`` generated positions.

    transformers' ``begin_suppress_tokens`` bans at exactly one position, found from
    the prompt length; here the position is ``ctx.step``, so the prompt length and
    the prompt cache play no part, and ``steps`` may exceed one.

    Args:
        ids: Token ids to ban; duplicates are dropped, an empty list is a no-op.
        steps: How many leading positions to ban them at (``1``: the first token only).
        vocab_size: Optional vocabulary size (see ``SuppressTokens``).

    Raises:
        ValueError: A bad id (see ``SuppressTokens``) or ``steps`` not an int >= 1.

    >>> import mlx.core as mx
    >>> from mlx_gen.processors import BeginSuppressTokens, ProcessorContext
    >>> ban = BeginSuppressTokens([2], steps=1)
    >>> first = ProcessorContext(mx.array([5]), mx.array([], dtype=mx.int32), step=0)
    >>> ban(mx.zeros((1, 3)), first).tolist()
    [[0.0, 0.0, -inf]]
    >>> ban(mx.zeros((1, 3)), ProcessorContext(mx.array([5]), mx.array([1]), step=1)).tolist()
    [[0.0, 0.0, 0.0]]
    """

    ids: Sequence[int]
    steps: int = 1
    vocab_size: int | None = None
    _tokens: TokenSet = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1:
            raise ValueError(
                f"BeginSuppressTokens: steps={self.steps!r} is invalid: expected an int >= 1"
            )
        vocab_size = check_vocab_size(self.vocab_size, "BeginSuppressTokens")
        ids = token_id_tuple(self.ids, vocab_size, "BeginSuppressTokens")
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "_tokens", TokenSet(ids, vocab_size))

    def __call__(self, logits: mx.array, ctx: ProcessorContext) -> mx.array:
        if ctx.step >= self.steps:
            return logits
        return self._tokens.ban(logits)


@dataclass(frozen=True)
class MinNewTokens:
    """Ban every EOS id while ``ctx.step < min_new_tokens``.

    All ids in ``eos_token_ids`` are banned (not only the first), so no stop token
    can end generation before ``min_new_tokens`` tokens exist. The prompt is not
    counted (transformers' ``min_length`` counts it).

    Args:
        min_new_tokens: The number of tokens to generate before an EOS may win;
            ``0`` is a no-op.
        eos_token_ids: Every id that ends generation; duplicates are dropped. Empty
            is a no-op (nothing can stop generation early).
        vocab_size: Optional vocabulary size (see ``SuppressTokens``).

    Raises:
        ValueError: ``min_new_tokens`` is not an int >= 0, or a bad EOS id.

    >>> import mlx.core as mx
    >>> from mlx_gen.processors import MinNewTokens, ProcessorContext
    >>> ctx = ProcessorContext(mx.array([5]), mx.array([1]), step=1)
    >>> MinNewTokens(2, eos_token_ids=[0, 3])(mx.zeros((1, 4)), ctx).tolist()
    [[-inf, 0.0, 0.0, -inf]]
    """

    min_new_tokens: int
    eos_token_ids: Sequence[int]
    vocab_size: int | None = None
    _tokens: TokenSet = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = self.min_new_tokens
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"MinNewTokens: min_new_tokens={n!r} is invalid: expected an int >= 0")
        vocab_size = check_vocab_size(self.vocab_size, "MinNewTokens")
        ids = token_id_tuple(self.eos_token_ids, vocab_size, "MinNewTokens")
        object.__setattr__(self, "eos_token_ids", ids)
        object.__setattr__(self, "_tokens", TokenSet(ids, vocab_size))

    def __call__(self, logits: mx.array, ctx: ProcessorContext) -> mx.array:
        if ctx.step >= self.min_new_tokens:
            return logits
        return self._tokens.ban(logits)
