"""Speculative decoding: draft several tokens, verify them in one target forward pass.

:func:`speculative_generate_tokens` is :func:`~mlx_gen.decode.generate_tokens` with a
drafter (``GenerationSettings.speculative``): it yields the same :class:`GeneratedToken`
stream, with every control applied exactly (see :mod:`mlx_gen.verify`): greedy output is
token-for-token the non-speculative output, sampled output has the same distribution,
and each token's logprobs are those of its own position.

The loop alternates two modes:

* **speculating**: read the last token, ask the drafter for up to ``k`` tokens, verify
  them in one forward pass, emit the accepted ones and one more, and trim the rejected
  positions from the KV cache (``PromptCache.token_ids`` always equals what it holds);
* **plain**: the pipelined one-token step of :mod:`mlx_gen.decode` (step ``n + 1`` is
  queued before token ``n`` is read), used when there is nothing to draft or while
  drafting is backed off.

Adaptive back-off (:class:`~mlx_gen.drafters.Backoff`): the draft length grows after a
fully accepted draft and shrinks to one more than the accepted run otherwise; a round that
accepts nothing pauses drafting for 2, 4, 8, ... (at most 64) tokens, so text the drafter cannot
predict runs at the plain speed. On top of it the cost model
(:mod:`mlx_gen.speculation_cost`) times plain steps and rounds on this backend and these
weights and drafts only where that pays; where no acceptance could pay (a quantized
model on MLX's CPU backend) drafting stops for the rest of the call.

Under a constraint (:mod:`mlx_gen.speculation_grammar`) every step is a verification:
drafts are cut where the grammar forbids a token, each position is masked by the grammar's
state after the drafts before it, and a position with nothing drafted is a plain masked
step; greedy output equals plain constrained decoding token for token.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import mlx.core as mx
from mlx_lm.models.cache import (
    BatchRotatingKVCache,
    RotatingKVCache,
    can_trim_prompt_cache,
    trim_prompt_cache,
)

from mlx_gen.decode import (
    _STREAM,
    ProgressCallback,
    _Stepper,
    generate_tokens,
    prefill_prompt,
    token_event,
)
from mlx_gen.generated_token import GeneratedToken
from mlx_gen.loading.loader import LoadedModel
from mlx_gen.no_allowed_token import NO_TOKEN
from mlx_gen.plan import DecodePlan, checked_call
from mlx_gen.prefix_cache.cache import PrefixCache
from mlx_gen.prefix_cache.session import call_cache
from mlx_gen.prompt_cache import PromptCache
from mlx_gen.proposer import Proposer
from mlx_gen.settings import GenerationSettings
from mlx_gen.speculation_cost import SpeculationStats
from mlx_gen.verify import verify_draft


def speculative_generate_tokens(
    model: LoadedModel,
    prompt_ids: Sequence[int],
    settings: GenerationSettings | None = None,
    *,
    prompt_cache: PromptCache | PrefixCache | None = None,
    on_prefill: ProgressCallback | None = None,
    stats: SpeculationStats | None = None,
) -> Iterator[GeneratedToken]:
    """Generate tokens after ``prompt_ids``, speculating with ``settings.speculative``.

    Same arguments and output as :func:`~mlx_gen.decode.generate_tokens` (which it
    calls when ``settings.speculative`` is ``None``), plus ``stats``, filled as it runs.

    Raises:
        ValueError: An empty prompt, invalid settings, a draft model whose vocabulary
            size differs, or a prompt cache that cannot be trimmed (a rotating cache).
    """
    settings = settings or GenerationSettings()
    if settings.speculative is None:
        yield from generate_tokens(
            model, prompt_ids, settings, prompt_cache=prompt_cache, on_prefill=on_prefill
        )
        return
    # The same boundary as plain decoding: ids, truncation, context, max_tokens clamp.
    prompt_ids, plan = checked_call(model, prompt_ids, settings)
    if plan.max_tokens == 0:
        return
    cache = call_cache(prompt_cache, model.model)
    check_trimmable(cache.layers)
    loop = _Speculator(model, plan, settings, prompt_ids, cache, stats or SpeculationStats())
    claim = cache.claim()
    try:
        prefill_prompt(model, cache, prompt_ids, settings, on_prefill)
        yield from loop.run(on_prefill)
    finally:
        cache.release(claim)  # The token list and the KV cache agree on every exit.


def check_trimmable(layers: list[Any]) -> None:
    """Raise ``ValueError`` unless the KV cache ``layers`` can drop rejected positions."""
    rotating = any(isinstance(c, RotatingKVCache | BatchRotatingKVCache) for c in layers)
    if rotating or not can_trim_prompt_cache(layers):
        raise ValueError(
            "speculative=... needs a KV cache that can drop rejected positions; this "
            "prompt cache cannot be trimmed (a rotating cache: max_kv_size is set, or the "
            "model uses sliding-window layers)"
        )


class _Speculator:
    """One call's speculative loop (see the module docstring)."""

    def __init__(
        self,
        model: LoadedModel,
        plan: DecodePlan,
        settings: GenerationSettings,
        prompt_ids: list[int],
        cache: PromptCache,
        stats: SpeculationStats,
    ) -> None:
        self.model, self.plan, self.cache, self.stats = model, plan, cache, stats
        self.prompt_ids, self.generated = prompt_ids, []
        self.prompt = mx.array(prompt_ids, dtype=mx.int32)
        self.stepper = _Stepper(model, plan, self.prompt, cache)
        keys = mx.random.split(self.stepper.tail.key, 3)
        self.stepper.tail.key, self.key = keys[0], keys[1]
        self.proposer = Proposer(
            model, plan, settings.speculative, prompt_ids, key=keys[2],
            prefill_step_size=settings.prefill_step_size, stats=stats,
        )  # fmt: skip
        self.grammar = self.proposer.grammar
        self.on_prefill: ProgressCallback | None = None
        self.last_read: float | None = None  # when the last plain step was read

    def run(self, on_prefill: ProgressCallback | None) -> Iterator[GeneratedToken]:
        """Yield tokens: verified rounds while drafting, plain pipelined steps otherwise."""
        plan, self.on_prefill = self.plan, on_prefill
        switch = True  # the next read ends the plain run (nothing queued behind it)
        while True:
            if switch:
                while (status := (yield from self._round())) == "drafted":
                    pass
                if status == "finished":
                    return
                last = (self.prompt_ids + self.generated)[-1]  # nothing to draft: go plain
                gen = mx.array(self.generated, dtype=mx.int32)
                self.stepper.tail.restart(gen)  # verified tokens never passed through it
                token, packed = self._queue(
                    mx.array([last], dtype=mx.int32), gen, n=len(self.generated)
                )
                self.cache.record([last])
            switch_in, switch = switch, False
            n = len(self.generated)  # ``token`` is step n, its input already fed
            queued = None
            limit = plan.max_tokens - 2 - n  # drafts a round after token n could verify
            if n + 1 < plan.max_tokens and not (switch := self.proposer.worth_drafting(limit)):
                if plan.processors:
                    gen = mx.concatenate([gen, token])
                queued = self._queue(token, gen, n=n + 1)  # queued before reading step n
            value = token.item()  # The one host read per token.
            self._time_plain_step(timed=not switch_in)
            if queued is not None and value != NO_TOKEN:
                self.cache.record([value])
            out = self._emit(value, packed[0].tolist() if packed else None)
            yield from self._yield(out)
            if out.finish_reason is not None:
                return
            if queued is not None:
                token, packed = queued

    def _queue(self, inputs: mx.array, gen: mx.array, *, n: int) -> tuple[mx.array, list]:
        """Queue the plain step for generated token ``n`` (the caller records ``inputs``)."""
        token, packed = self.stepper(inputs, n, gen)
        mx.async_eval(token, *packed)
        return token, packed

    def _time_plain_step(self, *, timed: bool) -> None:
        """Report a plain step with its read-to-read time (not the first of a run)."""
        now = time.perf_counter()
        seconds = now - self.last_read if timed and self.last_read is not None else None
        self.proposer.plain(seconds)
        self.last_read = now

    def _round(self) -> Iterator[GeneratedToken]:
        """Draft, verify, emit; returns ``"drafted"``, ``"finished"`` or ``"none"``."""
        n, last = len(self.generated), (self.prompt_ids + self.generated)[-1]
        start = time.perf_counter()
        context = self.prompt_ids + self.generated
        draft = self.proposer.propose(context, self.generated, self.plan.max_tokens - 1 - n)
        if draft is None:
            return "none"
        with mx.stream(_STREAM):
            self.key, key = mx.random.split(self.key)
            masks = None if self.grammar is None else self.grammar.masks(draft)
            result = verify_draft(
                self.model, self.cache.layers, self.plan, last, draft, prompt=self.prompt,
                generated=self.generated, key=key, bitmask=masks,
            )  # fmt: skip
        k, a = draft.tokens.shape[0], result.accepted
        self.proposer.verified(drafted=k, accepted=a)
        self.cache.record([last, *draft.tokens.tolist()])
        self._trim(k - a)  # the KV cache keeps y and the accepted drafts
        for i in range(a + 1):
            mine = result.rows[i :: k + 1] if result.rows is not None else None  # mode-major
            out = self._emit(result.tokens[i], mine)
            yield from self._yield(out)
            if out.finish_reason is not None:
                self._settle()
                return "finished"
        seconds = time.perf_counter() - start  # drafting, verifying and emitting
        self.proposer.timed(drafted=k, accepted=a, seconds=seconds)
        return "drafted"

    def _emit(self, value: int, rows: list[list[float]] | None) -> GeneratedToken:
        n = len(self.generated)
        if n == 0 and self.on_prefill is not None:
            total = len(self.prompt_ids)
            self.on_prefill(total, total)
        out = token_event(self.plan, value, n, rows)
        if self.grammar is not None:
            out = self.grammar.report(out)
        if value != NO_TOKEN:
            self.generated.append(value)
            self.proposer.emitted(value)
        if n % 256 == 255:
            mx.clear_cache()
        return out

    def _yield(self, out: GeneratedToken) -> Iterator[GeneratedToken]:
        try:
            yield out
        except GeneratorExit:  # the caller stopped (a stop string): drop what it never saw
            self._settle()
            raise

    def _trim(self, count: int) -> None:
        if count > 0:
            trim_prompt_cache(self.cache.layers, count)
            del self.cache.token_ids[-count:]

    def _settle(self) -> None:
        """Leave the cache holding the prompt and every emitted token but the last."""
        self._trim(len(self.cache.token_ids) - (len(self.prompt_ids) + len(self.generated) - 1))
