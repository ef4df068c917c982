"""Speculative decoding inside the batched decoder: a row drafts while it runs alone.

A verification round feeds ``k + 1`` positions of one row. In a batch of ``B`` rows every
row already adds its own position to each forward pass, and rows accepting different
numbers of drafts would leave rows of different lengths in one left-padded KV cache
(mlx-lm's ``BatchKVCache`` trims every row alike). So a row that asked for speculation
(``GenerationSettings.speculative``) drafts **while it is the only row in the batch and
no other row waits** — the common case of a local server, which mostly serves one
client at a time — and takes plain batched steps otherwise. ``benchmarks/bench_server.py
--speculative`` measures both sides (BENCHMARKS.md).

While alone the row runs the same stages as :mod:`mlx_gen.speculative`: the
:class:`~mlx_gen.proposer.Proposer` (drafter, back-off, measured cost model, grammar
cut), one forward pass over ``[last, d_1..d_k]`` on the batch cache,
:func:`~mlx_gen.verify.verify_logits` (processors with each position's own context,
constraint masks, filters, acceptance, logprob reports), then the rejected positions
are trimmed. The constraint's matcher is the row's own, so plain steps and rounds
advance one grammar state. Greedy rows give exactly their plain tokens; sampled rows
keep their distribution (their verification key is split from the row's seed once, as
in :func:`~mlx_gen.speculative.speculative_generate_tokens`).

A row's speculative state keeps the invariant of the batch path: the KV cache holds
the prompt and every generated token but the last, and ``row.step`` is the last
token's position.
"""

from __future__ import annotations

import time
from typing import Any

import mlx.core as mx
from mlx_lm.models.cache import make_prompt_cache

from mlx_gen.batch.step import STREAM, QueuedStep, Row
from mlx_gen.decode import token_event
from mlx_gen.generated_token import GeneratedToken
from mlx_gen.loading.loader import LoadedModel
from mlx_gen.no_allowed_token import NO_TOKEN
from mlx_gen.proposer import Proposer
from mlx_gen.speculation_cost import SpeculationStats
from mlx_gen.speculative import check_trimmable
from mlx_gen.verify import verify_draft


def check_speculative_model(model: LoadedModel) -> None:
    """Raise ``ValueError`` when ``model``'s KV cache cannot drop rejected positions."""
    check_trimmable(make_prompt_cache(model.model))


def attach(model: LoadedModel, row: Row, *, prefill_step_size: int) -> None:
    """Give ``row`` its speculative state when its plan drafts (``plan.speculative``)."""
    if row.plan.speculative is not None:
        row.spec = RowSpeculation(model, row, prefill_step_size=prefill_step_size)


def may_draft(row: Row, *, joining: bool) -> bool:
    """``row`` speculates and runs on, and no waiting row joins the batch at the next step."""
    return row.spec is not None and not (joining or row.done or row.ended)


def lone_drafter(rows: list[Row], *, joining: bool) -> Row | None:
    """The row of a step of ``rows`` when it is alone there, may draft and should draft
    next (then nothing is queued behind the step: the next one is a round)."""
    row = rows[0] if len(rows) == 1 else None
    return row if row and may_draft(row, joining=joining) and row.spec.worth_drafting(row) else None


class RowSpeculation:
    """One batch row's speculative state.

    Args:
        model: The target model.
        row: The row (its plan's ``speculative`` is the drafter); its key chain is split
            here, before its first step, as the single-sequence path splits it.
        prefill_step_size: A draft model's prefill chunk.

    Attributes:
        stats: The row's counters and the cost model's decision.
        generated: The row's generated ids so far (on the host).
    """

    def __init__(self, model: LoadedModel, row: Row, *, prefill_step_size: int) -> None:
        keys = mx.random.split(row.key, 3)
        row.key, self.key = keys[0], keys[1]
        self.stats = SpeculationStats()
        self.proposer = Proposer(
            model, row.plan, row.plan.speculative, row.prompt_ids, key=keys[2],
            prefill_step_size=prefill_step_size, stats=self.stats, matcher=row.guide,
        )  # fmt: skip
        self.generated: list[int] = []
        self._last_read: float | None = None
        self._timed = False  # the previous read was a plain step of this row alone

    def read_plain(self, token: int, *, alone: bool) -> None:
        """A plain batched step gave this row ``token`` (``alone``: the only row)."""
        now = time.perf_counter()
        seconds = None
        if alone and self._timed and self._last_read is not None:
            seconds = now - self._last_read
        self.proposer.plain(seconds)
        self._last_read, self._timed = now, alone
        self._emitted(token)

    def worth_drafting(self, row: Row) -> bool:
        """Whether the step after the one just queued should be a round."""
        return self.proposer.worth_drafting(row.plan.max_tokens - 2 - row.step)

    def _emitted(self, token: int) -> None:
        if token != NO_TOKEN:
            self.generated.append(token)
            self.proposer.emitted(token)

    def round(self, model: LoadedModel, cache: list[Any], row: Row) -> list[GeneratedToken] | None:
        """Draft, verify on the batch ``cache`` (this row alone), trim; the tokens emitted.

        ``None`` when nothing is worth drafting now (the row goes back to plain steps).
        Marks the row done when a token ends it.
        """
        plan, n = row.plan, len(self.generated)
        draft = self.proposer.propose(
            row.prompt_ids + self.generated, self.generated, plan.max_tokens - 1 - n
        )
        if draft is None:
            return None
        grammar = self.proposer.grammar
        with mx.stream(STREAM):
            self.key, key = mx.random.split(self.key)
            result = verify_draft(
                model, cache, plan, self.generated[-1], draft, prompt=row.prompt,
                generated=self.generated, key=key,
                bitmask=None if grammar is None else grammar.masks(draft),
            )  # fmt: skip
        k, a = draft.tokens.shape[0], result.accepted
        self.proposer.verified(drafted=k, accepted=a)
        rows = result.rows
        events: list[GeneratedToken] = []
        for i in range(a + 1):
            out = token_event(plan, result.tokens[i], n + i, rows[i :: k + 1] if rows else None)
            events.append(out if grammar is None else grammar.report(out))
            self._emitted(result.tokens[i])
            if events[-1].finish_reason is not None:
                break
        # The cache keeps ``last`` and the drafts before the newest emitted token.
        for c in cache:
            c.trim(k + 1 - len(events))
        row.step += len(events)
        row.done = events[-1].finish_reason is not None
        now = time.perf_counter()
        if self._last_read is not None:
            self.proposer.timed(drafted=k, accepted=a, seconds=now - self._last_read)
        self._last_read, self._timed = now, False
        return events

    def resume(self, row: Row) -> QueuedStep:
        """The row's last token as a read step, for the batch path to continue from.

        ``row.generated`` (the processors' history) is set to every token but the last,
        which the batch path appends when it advances past this step.
        """
        if row.plan.processors:
            row.generated = mx.array(self.generated[:-1], dtype=mx.int32)
        last = mx.array(self.generated[-1:] or [NO_TOKEN], dtype=mx.int32)
        return QueuedStep([row], [row.step], last, None, [[]])
