"""The proposer stage of speculative decoding: what to draft now, and how much.

A :class:`Proposer` joins the pieces that decide a round's draft, each of them its own
concept: the drafter (prompt lookup or a draft model, :mod:`mlx_gen.drafters`), the
adaptive back-off (:class:`~mlx_gen.drafters.Backoff`), the measured cost model
(:mod:`mlx_gen.speculation_cost`) and, under a constraint, the grammar
(:mod:`mlx_gen.speculation_grammar`: drafts cut where it forbids, a draft model masked
by it). The verifier (:mod:`mlx_gen.verify`) and the loop (:mod:`mlx_gen.speculative`)
only see the :class:`~mlx_gen.drafters.Draft` it returns.
"""

from __future__ import annotations

from collections.abc import Sequence

import mlx.core as mx

from mlx_gen.constraints import Matcher
from mlx_gen.drafters import (
    Backoff,
    Draft,
    DraftModel,
    LookupDrafter,
    ModelDrafter,
    PromptLookup,
)
from mlx_gen.loading.loader import LoadedModel
from mlx_gen.plan import DecodePlan
from mlx_gen.speculation_cost import CostModel, SpeculationStats
from mlx_gen.speculation_grammar import GrammarGate


class Proposer:
    """One call's drafting decisions.

    Args:
        model: The target model (a draft model must share its vocabulary).
        plan: The call's plan (processors, sampling, EOS set, constraint).
        config: ``settings.speculative``.
        prompt_ids: The prompt.
        key: The draft model's PRNG key.
        prefill_step_size: The draft model's prefill chunk.
        stats: Where counts, measured costs and decisions are reported.
        matcher: The constraint's matcher to share (a batch row's); ``None``: its own.

    Raises:
        ValueError: A draft model whose vocabulary size differs from the target's.
    """

    def __init__(
        self,
        model: LoadedModel,
        plan: DecodePlan,
        config: PromptLookup | DraftModel,
        prompt_ids: list[int],
        *,
        key: mx.array,
        prefill_step_size: int,
        stats: SpeculationStats,
        matcher: Matcher | None = None,
    ) -> None:
        self.plan, self.stats = plan, stats
        self.backoff = Backoff(config.num_draft)
        self.cost = CostModel(stats, enabled=config.measure_cost)
        # Under a constraint every step is a verification (drafts cut where the grammar
        # forbids; an empty draft is a plain masked step), so the grammar sees every token.
        self.grammar = None
        if plan.constraint is not None:
            self.grammar = GrammarGate(plan.constraint, plan.eos_token_ids, matcher)
        self.lookup, self.drafter = None, None
        if isinstance(config, PromptLookup):
            self.lookup = LookupDrafter(config, prompt_ids)
            return
        if config.model.vocab_size != model.vocab_size:
            raise ValueError(
                f"speculative=DraftModel(...) has vocabulary size "
                f"{config.model.vocab_size}; the target's is {model.vocab_size} "
                "(a draft model must share the target's vocabulary)"
            )
        self.drafter = ModelDrafter(
            config,
            processors=plan.processors,
            sampling=plan.sampling,
            prompt=mx.array(prompt_ids, dtype=mx.int32),
            key=key,
            prefill_step_size=prefill_step_size,
        )

    def worth_drafting(self, limit: int) -> bool:
        """Whether the next step should be a round (``limit``: tokens still allowed)."""
        if not self.backoff.ready() or self.cost.length(limit) == 0:
            return False
        return self.lookup is None or bool(self.lookup.propose(1))

    def propose(self, context: Sequence[int], generated: Sequence[int], limit: int) -> Draft | None:
        """The next round's draft (at most ``limit``), or ``None`` to decode plainly.

        Under a constraint there is always a draft, possibly empty (a plain masked step).
        """
        draft = None
        limit = min(self.backoff.length, limit)
        limit = self.cost.length(limit) if self.backoff.ready() else 0
        if limit > 0 and self.lookup is not None:
            ids = self.lookup.propose(limit)
            draft = Draft(mx.array(ids, dtype=mx.int32)) if ids else None
        elif limit > 0:
            draft = self._model_draft(context, generated, limit)
        return draft if self.grammar is None else self.grammar.cut(draft)

    def _model_draft(self, context: Sequence[int], generated: Sequence[int], limit: int) -> Draft:
        if self.grammar is None:
            return self.drafter.propose(context, generated, limit)
        guide = self.grammar.guide()  # the draft model drafts under the grammar too
        try:
            return self.drafter.propose(context, generated, limit, guide)
        finally:
            guide.close()

    def verified(self, *, drafted: int, accepted: int) -> None:
        """A round verified ``drafted`` drafts (0: a plain masked step), ``accepted`` kept."""
        if drafted:
            stats = self.stats
            stats.rounds, stats.drafted = stats.rounds + 1, stats.drafted + drafted
            stats.accepted += accepted
            self.backoff.update(drafted=drafted, accepted=accepted)
        else:  # constrained, nothing drafted: a plain masked step
            self.stats.plain_tokens += 1
            self.backoff.tick()

    def timed(self, *, drafted: int, accepted: int, seconds: float) -> None:
        """The round took ``seconds`` from drafting to its last token handed out."""
        if drafted:
            self.cost.round(k=drafted, seconds=seconds, accepted=accepted)
        else:
            self.cost.plain(seconds)

    def plain(self, seconds: float | None) -> None:
        """A plain step was read (``seconds`` since the last one; ``None``: not timed)."""
        self.stats.plain_tokens += 1
        self.backoff.tick()
        if seconds is not None:
            self.cost.plain(seconds)

    def emitted(self, token: int) -> None:
        """``token`` joined the output (prompt lookup indexes it)."""
        if self.lookup is not None:
            self.lookup.extend([token])
