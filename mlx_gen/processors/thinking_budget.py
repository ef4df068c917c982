"""A thinking budget: after N reasoning tokens, force the end of the think block.

The think block is read from the context itself (prompt + generated, lazily): it is
open when the last start marker comes after the last end marker, whether the prompt
opened it (a template that ends with ``<think>``) or the model did. Reasoning tokens
are the generated tokens after the start marker. When ``N`` of them have been
generated and the block is still open, the ``forced`` ids (an optional message, then
the end marker) are forced one per step, so the block ends after exactly ``N``
reasoning tokens plus the forced ones. Being a logits processor, it works in every
decode path (single, batched, speculative, server) unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import mlx.core as mx

from mlx_gen.processors.context import ProcessorContext


@dataclass(frozen=True)
class ThinkingBudget:
    """Force the end of reasoning after ``budget`` reasoning tokens.

    Args:
        budget: Reasoning tokens allowed (``>= 0``).
        start_id: The id of the start marker (``<think>``).
        end_id: The id of the end marker (``</think>``).
        message: Ids forced before the end marker (e.g. "Time to answer."), may be empty.

    Raises:
        ValueError: A negative budget or a negative id.

    >>> import mlx.core as mx
    >>> from mlx_gen.processors import ProcessorContext
    >>> cap = ThinkingBudget(1, start_id=1, end_id=2)
    >>> ctx = ProcessorContext(mx.array([1]), mx.array([3], dtype=mx.int32), step=1)
    >>> cap(mx.zeros((1, 4)), ctx).tolist()
    [[-inf, -inf, 0.0, -inf]]
    """

    budget: int
    start_id: int
    end_id: int
    message: Sequence[int] = ()
    _forced: mx.array = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ids = [self.start_id, self.end_id, *self.message]
        if not isinstance(self.budget, int) or self.budget < 0:
            raise ValueError(f"ThinkingBudget: budget={self.budget!r} is invalid (an int >= 0)")
        if any(not isinstance(i, int) or i < 0 for i in ids):
            raise ValueError(f"ThinkingBudget: ids {ids} must be ints >= 0")
        object.__setattr__(self, "_forced", mx.array([*self.message, self.end_id], mx.int32))

    def __call__(self, logits: mx.array, ctx: ProcessorContext) -> mx.array:
        ids = ctx.context_ids  # (P + n,)
        total = ids.shape[0]
        positions = mx.arange(total)
        last_start = mx.max(mx.where(ids == self.start_id, positions, -1))
        last_end = mx.max(mx.where(ids == self.end_id, positions, -1))
        is_open = last_start > last_end
        # Reasoning tokens generated so far: those after the start marker and the prompt.
        spent = total - mx.maximum(last_start + 1, ctx.prompt_length)
        j = spent - self.budget  # which forced id is due, when 0 <= j < len(forced)
        due = is_open & (j >= 0) & (j < self._forced.shape[0])
        token = self._forced[mx.clip(j, 0, self._forced.shape[0] - 1)]
        vocab = mx.arange(logits.shape[-1])
        forced = mx.where(vocab == token, 0.0, -mx.inf).astype(logits.dtype)
        return mx.where(due, forced[None], logits)
