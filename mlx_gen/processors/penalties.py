"""Repetition penalties: HF's multiplicative one and OpenAI's additive presence/frequency ones.

Each penalised token is read once and written once (``take`` then
``put_along_axis``), so a token that occurs several times is penalised once,
except by ``FrequencyPenalty``, whose scatter-add counts occurrences on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx

from mlx_gen.processors.context import ProcessorContext
from mlx_gen.processors.token_ids import check_number


def _replace_at(logits: mx.array, ids: mx.array, values: mx.array) -> mx.array:
    """Write ``values`` (B, n) at columns ``ids`` (n,); repeated ids carry equal values."""
    index = mx.broadcast_to(ids[None, :], values.shape)  # (B, n)
    return mx.put_along_axis(logits, index, values, axis=-1)


@dataclass(frozen=True)
class RepetitionPenalty:
    """HF repetition penalty over the prompt and the generated tokens.

    For every distinct token in ``ctx.context_ids`` (or its last ``context_size``
    tokens): a negative logit is multiplied by ``penalty``, any other is divided by
    it. A token seen twice is penalised once. ``penalty > 1`` discourages
    repetition, ``penalty < 1`` encourages it, ``1`` is a no-op.

    Args:
        penalty: The factor, a finite number > 0.
        context_size: Look only at the last ``context_size`` tokens (an int >= 1);
            ``None`` looks at the whole context, prompt included, as transformers does.

    Raises:
        ValueError: ``penalty`` is not a finite number > 0, or ``context_size`` is not
            ``None`` or an int >= 1.

    >>> import mlx.core as mx
    >>> from mlx_gen.processors import ProcessorContext, RepetitionPenalty
    >>> ctx = ProcessorContext(mx.array([0, 1]), mx.array([1]), step=1)
    >>> RepetitionPenalty(2.0)(mx.array([[4.0, -4.0, 4.0]]), ctx).tolist()
    [[2.0, -8.0, 4.0]]
    """

    penalty: float
    context_size: int | None = None

    def __post_init__(self) -> None:
        penalty = check_number(self.penalty, "penalty", "RepetitionPenalty")
        if penalty <= 0:
            raise ValueError(
                f"RepetitionPenalty: penalty={self.penalty!r} is invalid: expected a number > 0"
            )
        size = self.context_size
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
            raise ValueError(
                f"RepetitionPenalty: context_size={size!r} is invalid: expected an int >= 1 or None"
            )
        object.__setattr__(self, "penalty", penalty)

    def __call__(self, logits: mx.array, ctx: ProcessorContext) -> mx.array:
        ids = ctx.context_ids
        if self.context_size is not None and ids.shape[0] > self.context_size:
            ids = ids[ids.shape[0] - self.context_size :]
        if self.penalty == 1.0 or ids.shape[0] == 0:
            return logits
        seen = mx.take(logits, ids, axis=-1)  # (B, n)
        seen = mx.where(seen < 0, seen * self.penalty, seen / self.penalty)
        return _replace_at(logits, ids, seen)


@dataclass(frozen=True)
class PresencePenalty:
    """OpenAI presence penalty: subtract ``penalty`` once from every generated token.

    Only ``ctx.generated_ids`` count (the prompt does not): ``logits - penalty *
    (count > 0)``. At step 0 nothing has been generated and logits are unchanged.

    Args:
        penalty: A finite number; positive discourages repetition, ``0`` is a no-op.

    Raises:
        ValueError: ``penalty`` is not a finite number.

    >>> import mlx.core as mx
    >>> from mlx_gen.processors import PresencePenalty, ProcessorContext
    >>> ctx = ProcessorContext(mx.array([0]), mx.array([2, 2]), step=2)
    >>> PresencePenalty(0.5)(mx.ones((1, 3)), ctx).tolist()
    [[1.0, 1.0, 0.5]]
    """

    penalty: float

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "penalty", check_number(self.penalty, "penalty", "PresencePenalty")
        )

    def __call__(self, logits: mx.array, ctx: ProcessorContext) -> mx.array:
        if ctx.step == 0 or self.penalty == 0.0:
            return logits
        ids = ctx.generated_ids
        return _replace_at(logits, ids, mx.take(logits, ids, axis=-1) - self.penalty)


@dataclass(frozen=True)
class FrequencyPenalty:
    """OpenAI frequency penalty: subtract ``penalty`` per occurrence in the generated tokens.

    Only ``ctx.generated_ids`` count: ``logits - penalty * count``. At step 0 logits
    are unchanged.

    Args:
        penalty: A finite number; positive discourages repetition, ``0`` is a no-op.

    Raises:
        ValueError: ``penalty`` is not a finite number.

    >>> import mlx.core as mx
    >>> from mlx_gen.processors import FrequencyPenalty, ProcessorContext
    >>> ctx = ProcessorContext(mx.array([0]), mx.array([2, 2]), step=2)
    >>> FrequencyPenalty(0.5)(mx.ones((1, 3)), ctx).tolist()
    [[1.0, 1.0, 0.0]]
    """

    penalty: float

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "penalty", check_number(self.penalty, "penalty", "FrequencyPenalty")
        )

    def __call__(self, logits: mx.array, ctx: ProcessorContext) -> mx.array:
        if ctx.step == 0 or self.penalty == 0.0:
            return logits
        # Scatter-add accumulates over repeated ids: that is the count.
        return logits.at[:, ctx.generated_ids].add(-self.penalty)
