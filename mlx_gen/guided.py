"""The decode loop under a constraint (structured output); used only when one is set.

Semantics (defined here, once):

* The constraint's bitmask is applied **after every processor** (bans, penalties, bias,
  custom processors) and **before** temperature → top-k → top-p → min-p, so the
  ``processed`` logprobs are those of the distribution actually sampled from, with
  disallowed ids at ``-inf``; ``raw`` logprobs stay the model's.
* Every id of the call's EOS set is allowed exactly when the grammar accepts (and none
  with ``ignore_eos``). ``min_new_tokens``, bans, bias, stop strings and ``max_tokens``
  still apply.
* When the constraint and the other controls leave no allowed token, or llguidance's
  matcher fails (its error state is checked after every mask, see
  :class:`~mlx_gen.constraints.Matcher`), generation ends with
  ``finish_reason="constraint"`` on a token-less event (``token == -1``) carrying a
  ``finish_message``; no invalid token is ever produced. ``max_tokens`` reached before
  the grammar completes is ``"length"`` with ``constraint_complete=False``.
* Every token reports ``constraint_complete``: whether the tokens so far form a complete
  match.

Pipelining: the mask of step ``n + 1`` needs token ``n`` on the host. The forward pass
and processors of step ``n + 1`` are queued first (``mx.async_eval``), then token ``n`` is
read (the one host read per token: the id, or ``-1`` when nothing was allowed), the
matcher advances and builds the next mask while the device runs the forward pass, and
mask → filters → sample are queued before token ``n`` is handed to the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import mlx.core as mx
import numpy as np

from mlx_gen.constraints import Matcher, apply_token_bitmask
from mlx_gen.generated_token import GeneratedToken
from mlx_gen.loading.loader import LoadedModel
from mlx_gen.logprobs.report import pack, unpack
from mlx_gen.plan import DecodePlan
from mlx_gen.processors.context import ProcessorContext
from mlx_gen.prompt_cache import PromptCache
from mlx_gen.sampling import SamplingParams, filter_logits, sample

_STREAM = getattr(mx, "new_thread_unsafe_stream", mx.new_stream)(mx.default_device())
_LOGPROB_STREAM = getattr(mx, "new_thread_unsafe_stream", mx.new_stream)(mx.default_device())


def masked_step(
    processed: mx.array, bitmask: mx.array, params: SamplingParams, key: mx.array | None
) -> tuple[mx.array, mx.array]:
    """Mask → filters → sample for ``(B, V)`` processed logits: ``(tokens (B,), filtered)``.

    A row whose mask and processors leave no finite logit samples ``-1``.
    """
    masked = apply_token_bitmask(processed, bitmask)
    filtered = filter_logits(masked, params)
    token = sample(filtered, key, params.greedy)
    any_allowed = mx.max(masked, axis=-1) > -mx.inf
    return mx.where(any_allowed, token, -1), filtered


class _GuidedStepper:
    """Builds one step in two halves: forward + processors, then mask + sampling."""

    def __init__(
        self, model: LoadedModel, plan: DecodePlan, prompt: mx.array, cache: PromptCache
    ) -> None:
        self.model, self.plan, self.prompt, self.cache = model, plan, prompt, cache
        self.key = mx.random.key(plan.seed)

    def forward(
        self, inputs: mx.array, step: int, generated: mx.array
    ) -> tuple[mx.array, mx.array]:
        """Queue the forward pass and processors: ``(raw logits, processed)``, ``(1, V)``."""
        with mx.stream(_STREAM):
            # A -1 (nothing allowed) is never read back; keep the lookup in range.
            inputs = mx.maximum(inputs, 0)
            logits = self.model.model(inputs[None], cache=self.cache.layers)[:, -1, :]
            if logits.dtype != mx.float32:
                logits = logits.astype(mx.float32)
            processed = logits
            ctx = ProcessorContext(self.prompt, generated, step)
            for processor in self.plan.processors:
                processed = processor(processed, ctx)
        mx.async_eval(processed)
        return logits, processed

    def sample(
        self, logits: mx.array, processed: mx.array, bitmask: np.ndarray
    ) -> tuple[mx.array, list[mx.array]]:
        """Queue mask → filters → sample (and logprobs): ``(token (1,), packed)``."""
        plan = self.plan
        key = None
        with mx.stream(_STREAM):
            if not plan.sampling.greedy:
                self.key, key = mx.random.split(self.key)
            token, filtered = masked_step(processed, mx.array(bitmask), plan.sampling, key)
        packed = []
        if plan.logprobs is not None:
            with mx.stream(_LOGPROB_STREAM):
                sources = {"raw": logits, "processed": filtered}
                rows = mx.concatenate([sources[m] for m in plan.logprobs.modes])
                chosen = mx.broadcast_to(mx.maximum(token, 0), (rows.shape[0],))
                packed = [pack(rows, chosen, plan.logprobs)]
        mx.async_eval(token, *packed)
        return token, packed


def decode_guided(
    model: LoadedModel,
    plan: DecodePlan,
    prompt_ids: Sequence[int],
    cache: PromptCache,
    on_prefill: Callable[[int, int], None] | None = None,
) -> Iterator[GeneratedToken]:
    """Decode under ``plan.constraint`` after a prefilled ``cache`` (see the module docstring).

    ``cache`` holds every prompt token but the last; the loop records the rest in it
    as :func:`~mlx_gen.decode.generate_tokens` does, and calls ``on_prefill(total,
    total)`` once the first token is read.
    """
    assert plan.constraint is not None
    matcher = Matcher(plan.constraint)
    stepper = _GuidedStepper(model, plan, mx.array(prompt_ids, dtype=mx.int32), cache)
    generated = mx.zeros((0,), dtype=mx.int32)
    pending = stepper.forward(mx.array(prompt_ids[-1:], dtype=mx.int32), 0, generated)
    token, packed = stepper.sample(*pending, matcher.mask())
    for n in range(plan.max_tokens):
        last = n + 1 == plan.max_tokens
        if not last:  # Queue step n + 1's forward pass before reading token n.
            if plan.processors:
                generated = mx.concatenate([generated, token])
            pending = stepper.forward(token, n + 1, generated)
        value = token.item()  # The one host read per token.
        if n == 0:
            cache.record(prompt_ids[-1:])
            if on_prefill is not None:
                on_prefill(len(prompt_ids), len(prompt_ids))
        if value < 0:
            if not last:  # The queued look-ahead fed a placeholder id (0) to the KV cache.
                cache.record([0])
            yield GeneratedToken(-1, n, {}, "constraint", matcher.accepting, matcher.stop_message())
            return
        matcher.consume(value)
        if not last:
            cache.record([value])
        reports = {}
        if packed:
            rows = packed[0].tolist()
            reports = {
                m: unpack(r, value, plan.logprobs)
                for m, r in zip(plan.logprobs.modes, rows, strict=True)
            }
        finish = "stop" if value in plan.eos_token_ids else ("length" if last else None)
        if finish is None:  # Build step n + 1's mask while its forward pass runs.
            token, packed = stepper.sample(*pending, matcher.mask())
        yield GeneratedToken(value, n, reports, finish, matcher.accepting)
        if finish is not None:
            return
        if n % 256 == 255:
            mx.clear_cache()
