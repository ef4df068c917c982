"""Per-call grammar state on the host: consume each sampled token, build the next bitmask.

A bitmask row holds ``ceil(V / 32)`` int32 words; bit ``i % 32`` of word ``i // 32`` is set
when id ``i`` is allowed (llguidance's layout). The mask of step ``n + 1`` needs token
``n``, so the engine reads token ``n``, calls :meth:`Matcher.consume`, then
:meth:`Matcher.mask` while the model's forward pass of step ``n + 1`` runs (llguidance
releases the GIL while it computes). :func:`fill_masks` does a batch's rows in parallel
on llguidance's worker threads.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import llguidance
import llguidance.numpy
import numpy as np

from mlx_gen.constraints.compiled import CompiledConstraint, matcher_error

_EXECUTOR: list[llguidance.LLExecutor] = []
_EXECUTOR_LOCK = threading.Lock()


def _executor() -> llguidance.LLExecutor:
    with _EXECUTOR_LOCK:
        if not _EXECUTOR:
            _EXECUTOR.append(llguidance.LLExecutor())
        return _EXECUTOR[0]


class Matcher:
    """One generation's position in the grammar.

    Args:
        compiled: The compiled constraint (its pristine matcher is copied).

    Attributes:
        words: Bitmask words per row.
        mask_empty: The last mask allowed no id at all (the grammar alone is stuck, or
            llguidance is in an error state).
        allowed: How many ids the last mask allowed (1: the grammar forced the token).

    llguidance in an error state (an internal limit hit: a ``Choice`` of 2,000+ strings,
    say) fills a mask that allows only EOS; every mask built here is checked, and an
    error state allows **no** id, so the run ends with ``finish_reason="constraint"``
    and :meth:`stop_message` gives llguidance's message. The check reads a flag on the
    host (no device work).
    """

    def __init__(self, compiled: CompiledConstraint) -> None:
        self.compiled = compiled
        self._matcher = compiled.matcher.deep_copy()
        self.words = (compiled.vocab_size + 31) // 32
        # With ignore_eos the grammar's EOS ids are never allowed (nothing may end it).
        self._banned_eos = () if compiled.eos_token_ids else compiled.grammar_eos_ids
        self._mask = np.zeros((1, self.words), dtype=np.int32)
        self.mask_empty = False
        self.allowed = compiled.vocab_size

    @property
    def accepting(self) -> bool:
        """The tokens consumed so far form a complete match (an EOS would be allowed)."""
        if self._matcher.is_error():
            return False
        return self._matcher.is_accepting() or self._matcher.stop_reason() == "EndOfSentence"

    def consume(self, token: int) -> None:
        """Advance past ``token`` (an id the last mask allowed)."""
        self._matcher.consume_token(token)

    def mask(self) -> np.ndarray:
        """The next step's bitmask, ``(1, words)`` int32 (reused between calls)."""
        llguidance.numpy.fill_next_token_bitmask(self._matcher, self._mask, 0)
        self.finish_row(self._mask[0])
        return self._mask

    def finish_row(self, row: np.ndarray) -> None:
        """Post-process a freshly filled bitmask row (error state, EOS bans, emptiness)."""
        if self._matcher.is_error():  # llguidance allows only EOS then: allow nothing
            row[:] = 0
        elif self._banned_eos:
            words = row.view(np.uint32)
            for i in self._banned_eos:
                words[i >> 5] &= np.uint32(~(1 << (i & 31)) & 0xFFFFFFFF)
        self.mask_empty = not row.any()
        self.allowed = int(np.bitwise_count(row.view(np.uint32)).sum())

    def grammar_effect(self) -> str:
        """What the last mask did: ``forced`` (one id allowed), ``masked`` (some ids
        disallowed) or ``free`` (every id allowed)."""
        return self._effect(self.allowed)

    def row_effects(self, masks: np.ndarray) -> list[str]:
        """:meth:`grammar_effect` of each row of ``masks`` (as :meth:`masks_along` gives)."""
        allowed = np.bitwise_count(masks.view(np.uint32)).sum(axis=1)
        return [self._effect(int(n)) for n in allowed]

    def _effect(self, allowed: int) -> str:
        if allowed == 1:
            return "forced"
        return "free" if allowed >= self.compiled.vocab_size else "masked"

    def rollback(self, count: int) -> None:
        """Undo the last ``count`` :meth:`consume` calls."""
        if count:
            self._matcher.rollback(count)

    def valid_prefix(self, tokens: Sequence[int]) -> int:
        """How many leading ``tokens`` the grammar accepts from here (nothing is consumed)."""
        return self._matcher.validate_tokens(list(tokens)) if tokens else 0

    def masks_along(self, tokens: Sequence[int]) -> np.ndarray:
        """The masks before and after each of ``tokens``: ``(len(tokens) + 1, words)`` int32.

        Row ``i`` is the mask after ``tokens[:i]`` (row 0: the next step's mask), as
        speculative verification needs for every drafted position. ``tokens`` must be a
        prefix the grammar accepts (:meth:`valid_prefix`); the matcher ends where it began.
        """
        masks = np.zeros((len(tokens) + 1, self.words), dtype=np.int32)
        for i in range(len(tokens) + 1):
            if i:
                self._matcher.consume_token(tokens[i - 1])
            llguidance.numpy.fill_next_token_bitmask(self._matcher, masks, i)
            self.finish_row(masks[i])
        if tokens:
            self._matcher.rollback(len(tokens))
        return masks

    def stop_message(self) -> str:
        """Why no token was allowed, for ``finish_reason="constraint"``."""
        error = matcher_error(self._matcher)
        if error is not None:
            return f"the constraint failed in llguidance: {error}"
        if self.mask_empty and self.accepting:
            return (
                "the output is complete under the constraint and no EOS id may end it "
                "(ignore_eos is set)"
            )
        if self.mask_empty:
            return "the constraint allows no token at this point"
        return (
            "no token is allowed by both the constraint and the other controls (bans, "
            "logit bias, min_new_tokens, allowed_token_ids or custom processors remove "
            "every token the constraint allows here)"
        )


def fill_masks(rows: Sequence[tuple[Matcher, int]], bitmask: np.ndarray) -> None:
    """Fill ``bitmask[index]`` for every ``(matcher, index)``, in parallel.

    Args:
        rows: The matchers and their rows in ``bitmask``.
        bitmask: ``(B, words)`` int32, C-contiguous; other rows are left as they are.
    """
    if not rows:
        return
    pairs = [(m._matcher, i) for m, i in rows]
    llguidance.numpy.fill_next_token_bitmask_par(_executor(), pairs, bitmask)
    for matcher, index in rows:
        matcher.finish_row(bitmask[index])
