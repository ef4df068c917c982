"""The per-step tail of decoding: processors → filters → sample → logprob pack, compiled.

Built as dozens of small MLX ops from Python every step, the control chain costs
about as much op dispatch as a small model's forward pass. Here a call's fixed
configuration is traced once with ``mx.compile`` and replayed every step as a few
fused kernels:

* processors with a fused form (:mod:`mlx_gen.processors.fused`: the built-ins, and
  custom processors that provably read no per-step context) run over fixed-shape
  state (step counter, token counts, a tail of recent ids) that the compiled step
  itself advances with the sampled token, so no shape changes between steps;
* other processors are called as processors, every step, with the usual
  :class:`ProcessorContext`, in their place in the chain; the fused processors
  around them are compiled in segments;
* the sampling filters, the draw (the key chain of :mod:`mlx_gen.sampling`: one
  ``mx.random.split`` per sampled step) and both logprob modes' report follow in the
  last compiled segment.

Outputs are bit for bit those of the uncompiled chain (``compiled=False`` builds it,
and ``tests/test_step_tail.py`` compares the two).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import mlx.core as mx

from mlx_gen.logprobs.report import LogprobRequest, pack
from mlx_gen.no_allowed_token import feedable, has_choice, mark
from mlx_gen.processors.context import LogitsProcessor, ProcessorContext
from mlx_gen.processors.fused import FusedForm, State, advance, builtin_form, initial_state, probe
from mlx_gen.sampling import SamplingParams, filter_logits, sample
from mlx_gen.validation import run_processors

Stage = tuple[FusedForm, ...] | LogitsProcessor  # a compiled segment or one called processor


def plan_stages(
    processors: Sequence[LogitsProcessor], prompt_ids: mx.array | None, vocab_size: int
) -> list[Stage]:
    """Split the chain into runs of fused forms and processors called one by one.

    Args:
        processors: The chain, in order.
        prompt_ids: The prompt, to probe custom processors with; ``None`` probes none
            (only built-ins are fused).
        vocab_size: ``V``.
    """
    stages: list[Stage] = []
    for p in processors:
        form = builtin_form(p)
        if form is None and prompt_ids is not None:
            form = probe(p, prompt_ids, vocab_size)
        if form is None:
            stages.append(p)
        elif stages and isinstance(stages[-1], tuple):
            stages[-1] = (*stages[-1], form)
        else:
            stages.append((form,))
    return stages


def _apply(forms: tuple[FusedForm, ...], logits: mx.array, state: State) -> mx.array:
    for form in forms:
        logits = form.apply(logits, state)
    return logits


def sample_and_report(
    processed: mx.array,
    raw: mx.array,
    keys: list[mx.array],
    sampling: SamplingParams,
    logprobs: LogprobRequest | None,
) -> tuple[mx.array, list[mx.array], mx.array | None]:
    """Filters, the draw and the logprob report for ``B`` rows sharing one configuration.

    Args:
        processed: ``(B, V)`` processed logits.
        raw: ``(B, V)`` logits before the processors.
        keys: One key per row (ignored when greedy): each is split once, as
            :mod:`mlx_gen.sampling` documents; row ``i`` draws with its own key.
        sampling: The filters and temperature.
        logprobs: The report, or ``None``.

    Returns:
        ``(tokens (B,), next keys, packed)``; ``packed`` is ``(B * modes, width)``,
        row-major by row then mode, or ``None``.
    """
    filtered = filter_logits(processed, sampling)
    if sampling.greedy:
        tokens = sample(filtered, None, greedy=True)
    else:
        drawn = []
        for i, key in enumerate(keys):
            key, sub = mx.random.split(key)
            keys[i] = key
            drawn.append(sample(filtered[i : i + 1], sub, greedy=False))
        tokens = drawn[0] if len(drawn) == 1 else mx.concatenate(drawn)
    packed = None
    raw_reported = logprobs is not None and "raw" in logprobs.modes
    # Nothing to sample from (every id banned, a NaN): the row reads back NO_TOKEN. No host
    # read: the flag rides on the id that is read anyway.
    ok = has_choice(filtered, *([raw] if raw_reported else []))
    if logprobs is not None:
        sources = {"raw": raw, "processed": filtered}
        n_modes = len(logprobs.modes)
        if raw.shape[0] == 1:  # (modes, V): fewer ops than the general case
            rows = mx.concatenate([sources[m] for m in logprobs.modes])
            packed = pack(rows, mx.broadcast_to(tokens, (n_modes,)), logprobs)
        else:
            rows = mx.stack([sources[m] for m in logprobs.modes], axis=1)  # (B, modes, V)
            rows = rows.reshape(-1, rows.shape[-1])
            packed = pack(rows, mx.repeat(tokens, n_modes), logprobs)
    return mark(tokens, ok), keys, packed


class StepTail:
    """One call's tail, from the step's logits to its token (and logprob report).

    Args:
        processors: The chain (``DecodePlan.processors``).
        sampling: Filters and temperature.
        logprobs: The report to build, or ``None``.
        prompt_ids: ``(P,)`` int32, the whole prompt.
        seed: Starts the key chain (``mx.random.key(seed)``).
        vocab_size: ``V``.
        compiled: ``False`` runs the same chain without ``mx.compile`` (for tests).

    Call it once per step, in order, with ``(logits (1, V) float32, step, generated)``;
    ``generated`` is read only when some processor is called as a processor
    (:attr:`needs_generated`).
    """

    def __init__(
        self,
        processors: Sequence[LogitsProcessor],
        *,
        sampling: SamplingParams,
        logprobs: LogprobRequest | None,
        prompt_ids: mx.array,
        seed: int,
        vocab_size: int,
        compiled: bool = True,
    ) -> None:
        self.prompt_ids, self.sampling, self.logprobs = prompt_ids, sampling, logprobs
        self._stages = plan_stages(processors, prompt_ids if compiled else None, vocab_size)
        last = self._stages[-1] if self._stages and isinstance(self._stages[-1], tuple) else ()
        self._head = self._stages[: len(self._stages) - (1 if last else 0)]
        self._forms = [f for s in self._stages if isinstance(s, tuple) for f in s]
        self._vocab_size = vocab_size
        self.restart(mx.zeros((0,), dtype=mx.int32))
        self.key = mx.random.key(seed)  # the key chain; read and replaced every sampled step
        self.needs_generated = any(not isinstance(s, tuple) for s in self._stages)
        wrap: Callable[[Any], Any] = mx.compile if compiled else (lambda f: f)
        self._segments = {
            i: wrap(lambda logits, state, s=s: _apply(s, logits, state))
            for i, s in enumerate(self._head)
            if isinstance(s, tuple)
        }

        def final(
            raw: mx.array, processed: mx.array, state: State, key: mx.array
        ) -> tuple[mx.array, State, mx.array, mx.array | None]:
            processed = _apply(last, processed, state)
            tokens, keys, packed = sample_and_report(processed, raw, [key], sampling, logprobs)
            return tokens, advance(state, feedable(tokens)), keys[0], packed

        self._final = wrap(final)

    def restart(self, generated: mx.array) -> None:
        """Rebuild the fused state for the step after ``generated`` (``(n,)`` ids).

        The state advances itself with each token this tail samples; a caller that
        emits tokens some other way (speculative verification) restarts it before the
        next step.
        """
        context = [(self.prompt_ids, generated.astype(mx.int32))]
        self._state = initial_state(self._forms, context, self._vocab_size)

    def __call__(
        self, logits: mx.array, step: int, generated: mx.array
    ) -> tuple[mx.array, mx.array | None]:
        """Build the step (lazily): ``(token (1,), packed (modes, width) or None)``."""
        processed = logits
        ctx = None
        for i, stage in enumerate(self._head):
            if isinstance(stage, tuple):
                processed = self._segments[i](processed, self._state)
            else:
                ctx = ctx or ProcessorContext(self.prompt_ids, generated, step)
                processed = run_processors([stage], processed, ctx)  # shape/dtype checked
        token, self._state, self.key, packed = self._final(logits, processed, self._state, self.key)
        return token, packed
