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
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import mlx.core as mx

from mlx_gen.controls import build_processors
from mlx_gen.loading.loader import LoadedModel
from mlx_gen.logprobs.report import LogprobRequest, TokenLogprob, unpack
from mlx_gen.processors.context import LogitsProcessor
from mlx_gen.prompt_cache import PromptCache
from mlx_gen.sampling import SamplingParams
from mlx_gen.settings import GenerationSettings
from mlx_gen.step_tail import StepTail

_STREAM = mx.new_stream(mx.default_device())
ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class GeneratedToken:
    """One generated token.

    Attributes:
        token: The id.
        step: Its position among generated tokens (0 = first).
        logprobs: ``{"raw": ..., "processed": ...}`` for the requested modes.
        finish_reason: ``"stop"`` (an EOS id), ``"length"``, or ``None`` if more follow.
    """

    token: int
    step: int
    logprobs: dict[str, TokenLogprob] = field(default_factory=dict)
    finish_reason: str | None = None


@dataclass(frozen=True)
class DecodePlan:
    """A call's settings resolved against the model: built once, used every step."""

    processors: tuple[LogitsProcessor, ...]
    sampling: SamplingParams
    eos_token_ids: frozenset[int]
    max_tokens: int
    logprobs: LogprobRequest | None
    seed: int

    @classmethod
    def build(cls, model: LoadedModel, settings: GenerationSettings) -> DecodePlan:
        """Resolve ``settings`` against ``model``'s defaults (validates every id once)."""
        defaults, vocab = model.generation_config, model.vocab_size
        eos = settings.eos_set(defaults)
        for i in [*eos, *settings.logprob_token_ids]:
            if not 0 <= i < vocab:
                raise ValueError(f"token id {i} is outside the vocabulary (size {vocab})")
        if settings.logprobs is not None and settings.logprobs > vocab:
            raise ValueError(
                f"logprobs={settings.logprobs} is more than the vocabulary size ({vocab})"
            )
        request = None
        if settings.logprobs is not None:
            request = LogprobRequest(
                settings.logprobs,
                tuple(settings.logprob_token_ids),
                tuple(dict.fromkeys(settings.logprobs_modes)),
            )
        processors = build_processors(
            settings, defaults, tokenizer=model.tokenizer, vocab_size=vocab, eos_token_ids=eos
        )
        seed = (
            settings.seed if settings.seed is not None else int.from_bytes(os.urandom(4), "little")
        )
        return cls(
            tuple(processors),
            settings.sampling(defaults),
            frozenset(eos),
            settings.resolved_max_tokens(defaults),
            request,
            seed,
        )


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
    prompt_cache: PromptCache | None = None,
    on_prefill: ProgressCallback | None = None,
) -> Iterator[GeneratedToken]:
    """Generate tokens after ``prompt_ids``.

    Args:
        model: A loaded model.
        prompt_ids: The prompt (at least one id), BOS included if wanted.
        settings: Per-call options (``None``: the model's defaults).
        prompt_cache: Reuse and extend this cache (see :class:`PromptCache`).
        on_prefill: ``callback(done, total)`` after each prefill chunk and at the end.

    Yields:
        :class:`GeneratedToken` per token; the last carries ``finish_reason``.

    Raises:
        ValueError: An empty prompt, or invalid settings (named).
    """
    settings = settings or GenerationSettings()
    prompt_ids = [int(i) for i in prompt_ids]
    if not prompt_ids:
        raise ValueError("prompt_ids is empty: generation needs at least one prompt token")
    plan = DecodePlan.build(model, settings)
    if plan.max_tokens == 0:
        return
    cache = prompt_cache or PromptCache(model.model)
    cached = cache.reuse_for(prompt_ids)
    prefill(
        model,
        cache,
        prompt_ids[cached:-1],
        step_size=settings.prefill_step_size,
        on_progress=on_prefill,
        done=cached,
        total=len(prompt_ids),
    )
    yield from _decode(model, plan, prompt_ids, cache, on_prefill)


def _decode(
    model: LoadedModel,
    plan: DecodePlan,
    prompt_ids: list[int],
    cache: PromptCache,
    on_prefill: ProgressCallback | None,
) -> Iterator[GeneratedToken]:
    stepper = _Stepper(model, plan, mx.array(prompt_ids, dtype=mx.int32), cache)
    generated = mx.zeros((0,), dtype=mx.int32)
    token, packed = stepper(mx.array(prompt_ids[-1:], dtype=mx.int32), 0, generated)
    mx.async_eval(token, *packed)
    fed = [prompt_ids[-1]]
    for n in range(plan.max_tokens):
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
        if n + 1 < plan.max_tokens:
            cache.record([value])
        reports = {}
        if packed:  # one read for every mode's report
            rows = packed[0].tolist()
            reports = {
                m: unpack(r, value, plan.logprobs)
                for m, r in zip(plan.logprobs.modes, rows, strict=True)
            }
        finish = (
            "stop"
            if value in plan.eos_token_ids
            else ("length" if n + 1 == plan.max_tokens else None)
        )
        yield GeneratedToken(value, n, reports, finish)
        if finish is not None:
            return
        if n % 256 == 255:
            mx.clear_cache()
        token, packed = next_token, next_packed
