"""Ban tokens that would repeat an n-gram already in the context."""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx

from mlx_gen.processors.context import ProcessorContext


@dataclass(frozen=True)
class NoRepeatNGram:
    """transformers' ``no_repeat_ngram_size`` over the prompt and the generated tokens.

    With ``L`` context tokens (``ctx.context_ids``), every earlier occurrence of the
    last ``n - 1`` tokens bans the token that followed it, so no n-gram appears
    twice. ``n = 1`` bans every token already in the context. A context shorter
    than ``n`` is left unchanged.

    Computed lazily: the ``L - n + 1`` windows are compared with the last ``n - 1``
    tokens through ``n - 1`` shifted slices, and the followers of matching windows
    get ``-inf`` by one scatter.

    Args:
        n: The n-gram size, an int >= 1.

    Raises:
        ValueError: ``n`` is not an int >= 1.

    >>> import mlx.core as mx
    >>> from mlx_gen.processors import NoRepeatNGram, ProcessorContext
    >>> ctx = ProcessorContext(mx.array([1, 2, 3, 1]), mx.array([], dtype=mx.int32), step=0)
    >>> NoRepeatNGram(2)(mx.zeros((1, 4)), ctx).tolist()  # "1 2" seen: ban 2 after 1
    [[0.0, 0.0, -inf, 0.0]]
    """

    n: int

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or isinstance(self.n, bool) or self.n < 1:
            raise ValueError(f"NoRepeatNGram: n={self.n!r} is invalid: expected an int >= 1")

    def __call__(self, logits: mx.array, ctx: ProcessorContext) -> mx.array:
        ids = ctx.context_ids
        length, n = ids.shape[0], self.n
        if length < n:
            return logits
        windows = length - n + 1  # complete n-grams in the context
        match = mx.ones((windows,), dtype=mx.bool_)
        for j in range(n - 1):  # window i matches when ids[i + j] == ids[length - n + 1 + j]
            match = match & (ids[j : j + windows] == ids[length - n + 1 + j])
        followers = ids[n - 1 :]  # (windows,): the last token of each n-gram
        # minimum with +inf leaves unmatched followers unchanged, duplicates included.
        update = mx.where(match, -mx.inf, mx.inf).astype(logits.dtype)
        return logits.at[:, followers].minimum(update)
