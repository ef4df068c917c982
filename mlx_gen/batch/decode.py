"""The batched decode loop: many prompts, one forward pass per step (bottom batch layer).

Rows of different lengths share mlx-lm's batch KV caches (``BatchKVCache``): prompts
are prefilled right-padded, then rolled to left padding (``finalize``) so every row's
newest token sits in the same column. mlx-lm's attention masks the padding
(``make_mask``) and RoPE takes each row's own offset, so positions stay relative to the
row's first real token. After the forward pass everything is per row and mirrors
:mod:`mlx_gen.decode` (see :mod:`mlx_gen.batch.step`): each row's processors, sampling
filters, key chain and logprobs are its own.

Step ``n + 1`` is queued with ``mx.async_eval`` before step ``n`` is read. A finished row
leaves the batch (``filter``): a row that reaches ``max_tokens`` is dropped before a
step past it is built; a row that hits EOS, or that the caller cancels (stop string,
criterion), loses the look-ahead step already queued for it, as in
:func:`~mlx_gen.decode.generate_tokens`. With ``batch_size``, waiting prompts take the
freed places (continuous batching): they are prefilled and join the running batch.
A row with ``speculative`` settings drafts and verifies while it runs alone
(:mod:`mlx_gen.batch.speculate`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

import mlx.core as mx

from mlx_gen.batch.prefill import prefill
from mlx_gen.batch.prefix_rows import prefill_rows, store_finished
from mlx_gen.batch.speculate import attach, lone_drafter, may_draft
from mlx_gen.batch.step import STREAM, QueuedStep, Row, build_step, read_step, sample_pending
from mlx_gen.batch.tail import grouped, release
from mlx_gen.generated_token import GeneratedToken
from mlx_gen.loading.loader import LoadedModel
from mlx_gen.plan import DecodePlan
from mlx_gen.prefix_cache import PrefixCache
from mlx_gen.speculation_cost import SpeculationStats
from mlx_gen.validation import check_count, token_ids


class BatchDecoder:
    """Decode several prompts together; one :meth:`step` gives one token per active row.

    Args:
        model: A loaded model.
        prompts: Token ids per prompt (each at least one id).
        plans: One resolved :class:`DecodePlan` per prompt.
        batch_size: Rows decoded at once; others wait for a free place (``None``: all).
        prefill_step_size: Prompt tokens per forward pass while prefilling.
        prefix_cache: Look each prompt up here (only the rest is prefilled; the count is
            in :attr:`cached_tokens`) and store each row's KV when it leaves the batch.

    Raises:
        ValueError: Mismatched lengths, an empty prompt (named by index), an id outside
            the vocabulary (named with its position), a bad size.

    >>> # decoder = BatchDecoder(model, [[1, 2, 3], [1, 5]], [plan_a, plan_b])
    >>> # for events in decoder:  # [(index, GeneratedToken), ...] per step
    >>> #     ...                 # decoder.cancel(index) drops a row early
    """

    def __init__(
        self,
        model: LoadedModel,
        prompts: Sequence[Sequence[int]],
        plans: Sequence[DecodePlan],
        *,
        batch_size: int | None = None,
        prefill_step_size: int = 512,
        prefix_cache: PrefixCache | None = None,
    ) -> None:
        if len(prompts) != len(plans):
            raise ValueError(
                f"{len(prompts)} prompts but {len(plans)} plans; pass one plan per prompt"
            )
        for name, value in [("batch_size", batch_size), ("prefill_step_size", prefill_step_size)]:
            if value is not None:
                check_count(name, value, 1)
        rows = [
            Row(i, plan, token_ids(ids, model.vocab_size, what=f"prompts[{i}]"))
            for i, (ids, plan) in enumerate(zip(prompts, plans, strict=True))
        ]
        self.model, self.prefill_step_size = model, prefill_step_size
        for row in rows:
            if not row.prompt_ids:
                raise ValueError(
                    f"prompts[{row.index}] is empty: each prompt needs at least one token"
                )
            attach(model, row, prefill_step_size=prefill_step_size)
        self.batch_size = batch_size or max(len(rows), 1)
        self._rows = {r.index: r for r in rows}
        self._next_index = len(rows)
        self._waiting = deque(r for r in rows if r.plan.max_tokens > 0)
        self._cache: list[Any] | None = None
        self._queued: QueuedStep | None = None
        self._lone: Row | None = None  # a row drafting alone: its next step is a round
        self._steps = 0
        self.prefix_cache = prefix_cache
        self.cached_tokens: dict[int, int] = {}  # row index → prompt tokens from the cache
        self.cached_bytes: dict[int, int] = {}  # row index → bytes of KV cache they took
        self._fed: dict[int, list[int]] = {}  # row index → its tokens read so far

    @property
    def done(self) -> bool:
        """True when every row has finished (or was cancelled)."""
        return self._queued is None and self._lone is None and not self._waiting

    @property
    def waiting(self) -> int:
        """Rows added and not yet in the batch (waiting for a free place)."""
        return len(self._waiting)

    def speculation(self, index: int) -> SpeculationStats | None:
        """Row ``index``'s speculative counters and decision (``None``: it does not draft)."""
        row = self._rows.get(index)
        return row.spec.stats if row is not None and row.spec is not None else None

    def cancel(self, index: int) -> None:
        """Stop row ``index``: it is never read again and leaves the batch at the next step."""
        if index not in self._rows:
            raise ValueError(f"index={index!r} is invalid (expected 0..{len(self._rows) - 1})")
        row = self._rows[index]
        row.done = True
        if row in self._waiting:
            self._waiting.remove(row)

    def add(self, prompt_ids: Sequence[int], plan: DecodePlan) -> int:
        """Queue one more prompt; it joins the running batch at the next step.

        Rows that already finished are forgotten here (a long-running caller, such as
        the server, adds rows forever); ``cancel`` on a forgotten index raises.

        Returns:
            The new row's index (indices are never reused).

        Raises:
            ValueError: An empty prompt.
        """
        ids = [int(t) for t in prompt_ids]
        if not ids:
            raise ValueError("prompt_ids is empty: each prompt needs at least one token")
        self._rows = {i: r for i, r in self._rows.items() if not r.done}
        self.cached_tokens = {i: n for i, n in self.cached_tokens.items() if i in self._rows}
        self.cached_bytes = {i: n for i, n in self.cached_bytes.items() if i in self._rows}
        index = self._next_index
        self._next_index += 1
        row = Row(index, plan, ids)
        attach(self.model, row, prefill_step_size=self.prefill_step_size)
        self._rows[index] = row
        if plan.max_tokens > 0:
            self._waiting.append(row)
        else:
            row.done = True  # Nothing to generate: it never yields.
        return index

    def __iter__(self) -> Iterator[list[tuple[int, GeneratedToken]]]:
        while not self.done:
            yield self.step()

    def step(self) -> list[tuple[int, GeneratedToken]]:
        """Queue the next step, then read this one: ``[(index, token), ...]`` in batch order.

        A speculating row alone in the batch (:mod:`mlx_gen.batch.speculate`) takes
        verification rounds instead: one step then gives it every token the round emits.
        """
        self._steps += 1
        if self._steps % 256 == 0:
            mx.clear_cache()
        if self._lone is not None and (events := self._lone_round()) is not None:
            return events
        if self._queued is None:
            self._queued = self._advance(None)
            if self._queued is None:
                return []
            sample_pending(self._queued)
        current = self._queued
        alone = lone_drafter(current.rows, joining=self._joining)
        self._queued = None if alone is not None else self._advance(current)
        events = read_step(current)
        self._record(current, events)
        if alone is not None:  # nothing queued: the next step is a round, or it resumes
            self._lone = alone
            if alone.done:
                self._leave(alone)
        elif self._queued is not None:  # constrained rows: masks need the tokens just read
            sample_pending(self._queued)
        return events

    @property
    def _joining(self) -> bool:
        """A waiting row joins the running batch at the next step."""
        return bool(self._waiting) and self.batch_size > 1

    def _lone_round(self) -> list[tuple[int, GeneratedToken]] | None:
        """The lone row's round; ``None`` when it goes back to plain (batched) steps."""
        row = self._lone
        if may_draft(row, joining=self._joining):
            release([row])  # its key chain and history, back from a compiled group
            events = row.spec.round(self.model, self._cache, row)
            if events is not None:
                if self.prefix_cache is not None:
                    self._fed.setdefault(row.index, []).extend(e.token for e in events)
                if row.done:
                    self._leave(row)
                return [(row.index, e) for e in events]
        self._leave(row)
        return None

    def _leave(self, row: Row) -> None:
        """The batch path continues from the lone row's last token (or drops the row)."""
        self._lone = None
        self._queued = self._advance(row.spec.resume(row))
        if self._queued is not None:
            sample_pending(self._queued)

    def _record(self, current: QueuedStep, events: list[tuple[int, GeneratedToken]]) -> None:
        """Note each token read: the prefix cache's fed ids, a speculating row's history."""
        rows = {r.index: r for r in current.rows}
        for index, out in events:
            if self.prefix_cache is not None:
                self._fed.setdefault(index, []).append(out.token)
            if rows[index].spec is not None:
                rows[index].spec.read_plain(out.token, alone=len(current.rows) == 1)

    def _advance(self, current: QueuedStep | None) -> QueuedStep | None:
        """Drop finished rows, admit waiting ones, and queue the next step."""
        with mx.stream(STREAM):
            return self._advance_on_stream(current)

    def _advance_on_stream(self, current: QueuedStep | None) -> QueuedStep | None:
        rows: list[Row] = []
        inputs = mx.zeros((0,), dtype=mx.int32)
        if current is not None:
            keep = [
                i
                for i, r in enumerate(current.rows)
                if not r.done and r.step + 1 < r.plan.max_tokens
            ]
            rows = [current.rows[i] for i in keep]
            inputs = self._keep(current, keep)
        new = [
            self._waiting.popleft()
            for _ in range(min(self.batch_size - len(rows), len(self._waiting)))
        ]
        if new:
            inputs = mx.concatenate([inputs, mx.array([r.prompt_ids[-1] for r in new], mx.int32)])
            self._join(self._prefill([r.index for r in new], [r.prompt_ids for r in new]))
        rows += new
        if self.prefix_cache is not None:  # the running batch's KV counts against its budget
            self.prefix_cache.reserve(sum(c.nbytes for c in self._cache or []))
        if not rows:
            self._cache = None
            return None
        return build_step(self.model, self._cache, inputs, rows)

    def _prefill(self, indices: list[int], prompts: list[list[int]]) -> list[Any]:
        if self.prefix_cache is None:
            return prefill(self.model, prompts, self.prefill_step_size)
        cache, cached = prefill_rows(self.model, self.prefix_cache, prompts, self.prefill_step_size)
        for index, (tokens, nbytes) in zip(indices, cached, strict=True):
            self.cached_tokens[index], self.cached_bytes[index] = tokens, nbytes
        return cache

    def _store_leaving(self, current: QueuedStep, keep: list[int]) -> None:
        """Store each leaving row's KV: its prompt and the ``row.step`` tokens it fed."""
        kept = set(keep)
        for i, row in enumerate(current.rows):
            if i not in kept:
                fed = self._fed.pop(row.index, [])[: row.step]
                store_finished(self.prefix_cache, self._cache, i, row.prompt_ids + fed)

    def _keep(self, current: QueuedStep, keep: list[int]) -> mx.array:
        """Filter the cache to ``keep``; advance those rows; return their next inputs."""
        if self.prefix_cache is not None and len(keep) < len(current.rows):
            self._store_leaving(current, keep)
        for i in keep:
            row = current.rows[i]
            row.step += 1
            if row.plan.processors and not grouped(row):  # a group keeps its rows' ids
                row.generated = mx.concatenate([row.generated, current.tokens[i : i + 1]])
        if len(keep) == len(current.rows):
            return current.tokens
        if not keep:
            self._cache = None
            return mx.zeros((0,), dtype=mx.int32)
        for c in self._cache:
            c.filter(mx.array(keep))
        return current.tokens[mx.array(keep)]

    def _join(self, cache: list[Any]) -> None:
        if self._cache is None:
            self._cache = cache
            return
        for running, joining in zip(self._cache, cache, strict=True):
            running.extend(joining)
