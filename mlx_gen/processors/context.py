"""The one contract every logits processor follows, and the context it receives.

A processor is any callable ``processor(logits, ctx) -> logits``:

* ``logits`` has shape ``(B, V)`` (``B`` is 1 for single-sequence generation); the
  batch axis is kept and reductions run over ``axis=-1``.
* It returns new logits and never changes its input (use ``mx.where`` or
  ``.at[...]`` updates, which build new arrays).
* It stays lazy: no ``.item()``, ``.tolist()``, numpy or Python ``if`` on array
  values. Branching on ``ctx.step`` (a Python int) is fine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import mlx.core as mx


@dataclass(frozen=True)
class ProcessorContext:
    """What a processor knows about the sequence it is processing.

    Attributes:
        prompt_ids: The whole prompt, shape ``(P,)`` int32, including any part that was
            served from a prompt cache.
        generated_ids: The tokens generated so far (the prompt excluded), shape ``(n,)``.
            May be lazy: the last entry is the token sampled one step earlier.
        step: The index of the token about to be generated: ``0`` for the first one.
            Always equal to ``generated_ids.shape[0]``.
    """

    prompt_ids: mx.array
    generated_ids: mx.array
    step: int

    @cached_property
    def context_ids(self) -> mx.array:
        """Prompt followed by generated tokens, shape ``(P + n,)`` (built on first use)."""
        if self.step == 0:
            return self.prompt_ids
        return mx.concatenate([self.prompt_ids, self.generated_ids])

    @property
    def prompt_length(self) -> int:
        """Number of prompt tokens ``P``."""
        return self.prompt_ids.shape[0]


class LogitsProcessor(Protocol):
    """``processor(logits (B, V), ctx) -> logits (B, V)``; pure and lazy (see module doc)."""

    def __call__(self, logits: mx.array, ctx: ProcessorContext) -> mx.array: ...


def from_mlx_lm(fn: Callable[[mx.array, mx.array], mx.array]) -> LogitsProcessor:
    """Adapt an mlx-lm style processor ``fn(tokens, logits) -> logits``.

    mlx-lm passes the prompt and generated tokens concatenated; here ``tokens`` is
    ``ctx.context_ids``, which always includes the cached part of the prompt.

    >>> import mlx.core as mx
    >>> ban_5 = from_mlx_lm(lambda tokens, logits: logits.at[:, 5].add(-mx.inf))
    >>> ctx = ProcessorContext(mx.array([1, 2]), mx.array([], dtype=mx.int32), 0)
    >>> ban_5(mx.zeros((1, 8)), ctx)[0, 5].item()
    -inf
    """

    def processor(logits: mx.array, ctx: ProcessorContext) -> mx.array:
        return fn(ctx.context_ids, logits)

    processor.__name__ = getattr(fn, "__name__", "mlx_lm_processor")
    return processor
