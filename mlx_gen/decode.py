"""The decode loop: token ids in, generated tokens out (the bottom API layer).

Each step is built lazily: forward → processors → sampling filters → sample →
logprobs (only when requested). Step ``n + 1`` is queued with ``mx.async_eval``
before token ``n`` is read, so the device never waits for the host; reading the
sampled id is the one host read per token (plus the packed logprobs when asked for).

Guarantees:

* Processors are called exactly once per generated position with ``ctx.step`` equal
  to that position; no step is built past ``max_tokens`` (mlx-lm builds one more).
* When token ``n`` turns out to be an EOS (or the caller stops iterating), the step
  ``n + 1`` already queued is discarded: its processors ran once for nothing, and
  the KV cache holds token ``n``.
* When the distribution to sample from has no finite maximum (every id banned, a NaN,
  or a ``+inf`` that would make its softmax NaN), generation ends with
  ``finish_reason="no_allowed_token"``: the last :class:`GeneratedToken` has
  ``token == NO_TOKEN`` (-1), no logprobs, and is not a token (see
  :mod:`mlx_gen.no_allowed_token`). No banned id or NaN logprob is emitted.
* Prompt ids are checked against the vocabulary, and the prompt against the model's
  context, before any work (:mod:`mlx_gen.validation`); ``max_tokens`` is clamped so
  that prompt + generated tokens fit the context (finishing with ``"length"``).
* On every exit (exhausted, closed early, an exception in a processor) the
  :class:`PromptCache`'s token list and KV cache agree; a stream whose cache was taken
  over by another call raises instead of corrupting it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import mlx.core as mx

from mlx_gen.generated_token import GeneratedToken
from mlx_gen.guided import decode_guided
from mlx_gen.loading.loader import LoadedModel
from mlx_gen.logprobs.report import unpack
from mlx_gen.no_allowed_token import NO_ALLOWED_TOKEN, NO_TOKEN, feedable
from mlx_gen.plan import DecodePlan, checked_call
from mlx_gen.prefix_cache.cache import PrefixCache
from mlx_gen.prefix_cache.session import call_cache
from mlx_gen.prompt_cache import PromptCache
from mlx_gen.settings import GenerationSettings
from mlx_gen.step_tail import StepTail

# Any thread, one at a time (see mlx_gen.batch.step.STREAM).
_STREAM = getattr(mx, "new_thread_unsafe_stream", mx.new_stream)(mx.default_device())
ProgressCallback = Callable[[int, int], None]


def prefill(
    model: LoadedModel,
    cache: PromptCache,
    ids: Sequence[int],
    *,
    step_size: int,
    on_progress: ProgressCallback | None,
    done: int,
    total: int,
) -> None:
    """Run ``ids`` through the model in chunks of ``step_size``, filling ``cache``."""
    for start in range(0, len(ids), step_size):
        chunk = ids[start : start + step_size]
        with mx.stream(_STREAM):
            model.model(mx.array(chunk, dtype=mx.int32)[None], cache=cache.layers)
        mx.eval([c.state for c in cache.layers])
        cache.record(chunk)
        if on_progress is not None:
            on_progress(done + start + len(chunk), total)


class _Stepper:
    """Builds one lazy decode step; holds what every step shares."""

    def __init__(
        self, model: LoadedModel, plan: DecodePlan, prompt: mx.array, cache: PromptCache
    ) -> None:
        self.model, self.plan, self.prompt, self.cache = model, plan, prompt, cache
        self.tail = StepTail(
            plan.processors,
            sampling=plan.sampling,
            logprobs=plan.logprobs,
            prompt_ids=prompt,
            seed=plan.seed,
            vocab_size=model.vocab_size,
        )

    def __call__(
        self, inputs: mx.array, step: int, generated: mx.array
    ) -> tuple[mx.array, list[mx.array]]:
        with mx.stream(_STREAM):
            inputs = feedable(inputs)  # A NO_TOKEN look-ahead feeds id 0 (then discarded).
            logits = self.model.model(inputs[None], cache=self.cache.layers)[:, -1, :]  # (1, V)
            if logits.dtype != mx.float32:  # sample and report in float32, as transformers does
                logits = logits.astype(mx.float32)
            # Processors → filters → sample → logprob pack: compiled once (step_tail.py).
            token, report = self.tail(logits, step, generated)
        packed = [] if report is None else [report]
        return token, packed


def generate_tokens(
    model: LoadedModel,
    prompt_ids: Sequence[int],
    settings: GenerationSettings | None = None,
    *,
    prompt_cache: PromptCache | PrefixCache | None = None,
    on_prefill: ProgressCallback | None = None,
) -> Iterator[GeneratedToken]:
    """Generate tokens after ``prompt_ids``.

    Args:
        model: A loaded model.
        prompt_ids: The prompt (at least one id), BOS included if wanted.
        settings: Per-call options (``None``: the model's defaults).
        prompt_cache: Reuse and extend this cache (see :class:`PromptCache`), or look the
            prompt up in a shared :class:`PrefixCache` and store the result there.
        on_prefill: ``callback(done, total)`` after each prefill chunk and at the end.

    Yields:
        :class:`GeneratedToken` per token; the last carries ``finish_reason``.

    Raises:
        ValueError: An empty prompt, an id outside the vocabulary (its position named),
            a prompt that does not fit the model's context (both lengths named), invalid
            settings (named), a processor output of the wrong shape or dtype, or a
            ``prompt_cache`` another call took over while this one was running.
    """
    settings = settings or GenerationSettings()
    prompt_ids, plan = checked_call(model, prompt_ids, settings)
    if settings.speculative is not None:  # dispatched by stream_generate, not here
        raise ValueError(
            "settings.speculative is set: generate_tokens decodes one token per step; "
            "use mlx_gen.speculative_generate_tokens (or stream_generate / generate)"
        )
    if plan.max_tokens == 0:
        return
    cache = call_cache(prompt_cache, model.model)
    claim = cache.claim()
    try:
        prefill_prompt(model, cache, prompt_ids, settings, on_prefill)
        if plan.constraint is not None:  # structured output: its own pipelined loop
            yield from decode_guided(model, plan, prompt_ids, cache, on_prefill)
            return
        yield from _decode(model, plan, prompt_ids, cache, on_prefill, claim)
    finally:
        cache.release(claim)  # The token list and the KV cache agree again.


def token_event(
    plan: DecodePlan, value: int, step: int, rows: list[list[float]] | None
) -> GeneratedToken:
    """Generated token ``step`` as read from the host: its reports and finish reason.

    ``rows`` are the step's packed logprob rows, one per mode (``None``: not asked).
    ``NO_TOKEN`` ends with ``no_allowed_token``; an EOS id with ``stop``; the
    ``max_tokens``-th token with ``length``.
    """
    if value == NO_TOKEN:
        return GeneratedToken(NO_TOKEN, step, {}, NO_ALLOWED_TOKEN)
    reports = {}
    if rows is not None:  # one read for every mode's report
        reports = {
            m: unpack(r, value, plan.logprobs)
            for m, r in zip(plan.logprobs.modes, rows, strict=True)
        }
    finish = (
        "stop"
        if value in plan.eos_token_ids
        else ("length" if step + 1 == plan.max_tokens else None)
    )
    return GeneratedToken(value, step, reports, finish)


def prefill_prompt(
    model: LoadedModel,
    cache: PromptCache,
    prompt_ids: list[int],
    settings: GenerationSettings,
    on_prefill: ProgressCallback | None,
) -> None:
    """Reuse ``cache``'s common prefix and prefill the rest of the prompt but its last id.

    The prefill pauses at the cache's checkpoints (so a :class:`PrefixCache` can keep them).
    """
    start = cached = cache.reuse_for(prompt_ids)
    end = len(prompt_ids) - 1
    for stop in [*sorted(c for c in cache.checkpoints if cached < c < end), end]:
        prefill(
            model,
            cache,
            prompt_ids[start:stop],
            step_size=settings.prefill_step_size,
            on_progress=on_prefill,
            done=start,
            total=len(prompt_ids),
        )
        start = stop


def _decode(
    model: LoadedModel,
    plan: DecodePlan,
    prompt_ids: list[int],
    cache: PromptCache,
    on_prefill: ProgressCallback | None,
    claim: object,
) -> Iterator[GeneratedToken]:
    stepper = _Stepper(model, plan, mx.array(prompt_ids, dtype=mx.int32), cache)
    generated = mx.zeros((0,), dtype=mx.int32)
    token, packed = stepper(mx.array(prompt_ids[-1:], dtype=mx.int32), 0, generated)
    mx.async_eval(token, *packed)
    fed = [prompt_ids[-1]]
    for n in range(plan.max_tokens):
        cache.check(claim)  # Another call on this cache since the last token: refuse.
        if n + 1 < plan.max_tokens:
            # Queue step n + 1 before reading token n (the device keeps working).
            if stepper.tail.needs_generated:
                generated = mx.concatenate([generated, token])
            next_token, next_packed = stepper(token, n + 1, generated)
            mx.async_eval(next_token, *next_packed)
        value = token.item()  # The one host read per token.
        if n == 0:
            cache.record(fed)
            if on_prefill is not None:
                on_prefill(len(prompt_ids), len(prompt_ids))
        if value != NO_TOKEN and n + 1 < plan.max_tokens:
            cache.record([value])
        out = token_event(plan, value, n, packed[0].tolist() if packed else None)
        yield out
        if out.finish_reason is not None:
            return
        if n % 256 == 255:
            mx.clear_cache()
        token, packed = next_token, next_packed
