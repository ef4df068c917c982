"""The constraint stage of speculative decoding: cut drafts, mask every position, advance.

Under a constraint (structured output) the grammar takes part in each verification round:

* :meth:`GrammarGate.cut` keeps a draft up to its first token the grammar forbids (or its
  first EOS id: an end is never drafted, the verifier chooses it), so every verified
  draft is one the grammar allows;
* :meth:`GrammarGate.masks` gives the bitmask of every verified position (row ``i`` after
  ``d_1..d_i``), which the verifier applies after the processors and before the filters,
  exactly where :mod:`mlx_gen.guided` applies the mask in plain constrained decoding;
* :meth:`GrammarGate.report` advances the matcher over each emitted token (accepted
  drafts are consumed for good; rejected ones never were) and reports
  ``constraint_complete`` and what its position's mask did (``grammar``), or ends a
  position with nothing allowed as guided decoding does (``finish_reason="constraint"``
  with the matcher's message).
"""

from __future__ import annotations

from dataclasses import replace

import mlx.core as mx
import numpy as np

from mlx_gen.constraints import CompiledConstraint, Matcher
from mlx_gen.drafters import Draft
from mlx_gen.generated_token import GeneratedToken
from mlx_gen.no_allowed_token import NO_TOKEN


class GrammarGate:
    """One speculative call's grammar state.

    Args:
        constraint: The call's compiled constraint.
        eos_token_ids: The call's EOS set (drafts stop before the first).
        matcher: The matcher to advance (a batch row's own, shared with its plain steps);
            ``None``: a new one for ``constraint``.
    """

    def __init__(
        self,
        constraint: CompiledConstraint,
        eos_token_ids: frozenset[int],
        matcher: Matcher | None = None,
    ) -> None:
        self.matcher, self.eos = matcher or Matcher(constraint), eos_token_ids
        self.effects: list[str] = []  # what each position's mask of this round did

    def cut(self, draft: Draft | None) -> Draft:
        """``draft`` up to its first EOS id or forbidden token (an empty one for ``None``)."""
        if draft is None:
            return Draft(mx.zeros((0,), dtype=mx.int32))
        ids = draft.tokens.tolist()
        keep = self.matcher.valid_prefix(ids)
        keep = next((i for i, t in enumerate(ids[:keep]) if t in self.eos), keep)
        if keep == len(ids):
            return draft
        log_q = draft.log_q[:keep] if draft.log_q is not None else None
        return Draft(draft.tokens[:keep], log_q)

    def guide(self) -> DraftingGuide:
        """A :class:`~mlx_gen.drafters.DraftGuide` for a draft model's next proposal."""
        return DraftingGuide(self.matcher, self.eos)

    def masks(self, draft: Draft) -> mx.array:
        """``(k + 1, W)`` bitmasks for the positions of a verification of ``draft``."""
        masks = self.matcher.masks_along(draft.tokens.tolist())
        self.effects = self.matcher.row_effects(masks)
        return mx.array(masks)

    def report(self, out: GeneratedToken) -> GeneratedToken:
        """``out`` with the grammar's view: it advances, or says why nothing was allowed."""
        matcher = self.matcher
        # Emitted tokens take the round's positions in order (row i: after i accepted drafts).
        effect = self.effects.pop(0) if self.effects else None
        out = replace(out, grammar=effect)
        if out.token == NO_TOKEN:
            matcher.mask()  # the state stop_message reads
            message = matcher.stop_message()
            return replace(out, finish_reason="constraint", finish_message=message,
                           constraint_complete=matcher.accepting)  # fmt: skip
        matcher.consume(out.token)
        return replace(out, constraint_complete=matcher.accepting)


class DraftingGuide:
    """Masks a draft model's positions with the grammar; undone by :meth:`close`.

    Args:
        matcher: The call's matcher (advanced over the drafts, then rolled back).
        eos: The EOS set: an EOS is never drafted (drafting stops before it).
    """

    def __init__(self, matcher: Matcher, eos: frozenset[int]) -> None:
        self.matcher, self.eos, self.consumed = matcher, eos, 0
        self.row = None  # the last mask, on the host

    def mask(self) -> mx.array | None:
        """The grammar's mask here, or ``None`` when it allows nothing."""
        mask = self.matcher.mask()
        self.row = mask[0].view(np.uint32).copy()
        return None if self.matcher.mask_empty else mx.array(mask)

    def advance(self, token: int) -> bool:
        """Consume a drafted ``token``; ``False`` (stop before it) for an EOS id, or a token
        the mask forbids (the processors left the draft model nothing the grammar allows)."""
        allowed = 0 <= token < 32 * len(self.row) and (self.row[token >> 5] >> (token & 31)) & 1
        if token in self.eos or not allowed:
            return False
        self.matcher.consume(token)
        self.consumed += 1
        return True

    def close(self) -> None:
        """Return the matcher to where drafting began."""
        self.matcher.rollback(self.consumed)
        self.consumed = 0
