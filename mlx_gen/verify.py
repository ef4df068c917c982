"""Verification of drafted tokens: one target forward pass, every control applied exactly.

For drafts ``d_1..d_k`` after the last generated token ``y`` (not yet in the KV cache),
the target runs ``[y, d_1, ..., d_k]`` in one forward pass, giving logits for ``k + 1``
positions. Position ``i`` is processed exactly as non-speculative decoding would process
it: the call's processors with its own context (``step`` = its index among generated
tokens, ``generated_ids`` = the generated tokens plus ``d_1..d_i``, the prompt), then the
sampling filters. Then, on that processed distribution ``p_i``:

* greedy: ``t_i = argmax p_i``; ``d_{i+1}`` is accepted while it equals ``t_i``, so the
  output is the non-speculative greedy output token for token;
* sampled, deterministic drafter (prompt lookup, greedy draft model): ``d_{i+1}`` is
  accepted with probability ``p_i(d_{i+1})``; on rejection the token is drawn from
  ``p_i`` with ``d_{i+1}`` removed and the rest renormalized;
* sampled, sampling draft model with distribution ``q_i``: accepted with probability
  ``min(1, p_i(d)/q_i(d))``; on rejection drawn from ``(p_i - q_i)+`` renormalized.

Under a constraint, ``p_i`` is masked by the grammar's state after ``d_1..d_i`` (after
the processors, before the filters, as :mod:`mlx_gen.guided` does), and drafts are cut at
the first token the grammar forbids, so every accepted or resampled token is allowed.
Either rule makes each emitted token exactly ``p_i``-distributed (Leviathan et al.,
2023). When all ``k`` drafts are accepted, a bonus token is drawn from ``p_k``.
Randomness comes only from the verifier's own key, so a seed reproduces the output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import mlx.core as mx

from mlx_gen.constraints.mask import apply_token_bitmask
from mlx_gen.drafters import Draft
from mlx_gen.loading.loader import LoadedModel
from mlx_gen.logprobs.report import LogprobRequest, pack
from mlx_gen.no_allowed_token import has_choice, mark
from mlx_gen.plan import DecodePlan
from mlx_gen.processors.context import LogitsProcessor, ProcessorContext
from mlx_gen.sampling import SamplingParams, filter_logits, sample


@dataclass(frozen=True)
class Verified:
    """One verification, lazy until read.

    Attributes:
        tokens: ``(k + 1,)`` the token chosen at each position (an accepted draft, a
            resampled or the bonus token); only the first ``accepted + 1`` are output.
        accepted: ``(k,)`` bool, whether each draft passed its test (the output keeps the
            leading run of ``True``).
        packed: ``(modes * (k + 1), W)`` packed logprob reports (mode-major), or ``None``.
    """

    tokens: mx.array
    accepted: mx.array
    packed: mx.array | None


def process_positions(
    logits: mx.array,
    processors: tuple[LogitsProcessor, ...],
    *,
    prompt: mx.array,
    generated: mx.array,
    drafts: mx.array,
) -> mx.array:
    """Apply ``processors`` to each row of ``logits`` (``(k + 1, V)``) with its own context.

    Row ``i`` is the distribution of generated token ``n + i`` (``n = len(generated)``),
    after ``generated`` followed by ``drafts[:i]``.
    """
    if not processors:
        return logits
    rows, n = [], generated.shape[0]
    for i in range(logits.shape[0]):
        seen = mx.concatenate([generated, drafts[:i]]) if i else generated
        row, ctx = logits[i : i + 1], ProcessorContext(prompt, seen, n + i)
        for processor in processors:
            row = processor(row, ctx)
        rows.append(row)
    return mx.concatenate(rows)


def choose(
    filtered: mx.array, draft: Draft, sampling: SamplingParams, key: mx.array | None
) -> tuple[mx.array, mx.array]:
    """Accept or reject each draft on ``filtered`` ``(k + 1, V)``: ``(tokens, accepted)``."""
    d, k = draft.tokens, draft.tokens.shape[0]
    if k == 0:  # nothing drafted: a plain step (speculation under a constraint)
        return sample(filtered, key, sampling.greedy), mx.zeros((0,), dtype=mx.bool_)
    if sampling.greedy:
        target = sample(filtered, None, True)
        return target, target[:k] == d
    k_accept, k_resample, k_bonus = mx.random.split(key, 3)
    log_p = filtered[:k] - mx.logsumexp(filtered[:k], axis=-1, keepdims=True)  # (k, V)
    p_d = mx.exp(mx.take_along_axis(log_p, d[:, None], axis=-1)[:, 0])
    u = mx.random.uniform(shape=(k,), key=k_accept)
    if draft.log_q is None:  # deterministic drafter: accept with p(d); residual p without d
        accepted = u < p_d
        residual = mx.where(mx.arange(filtered.shape[-1])[None] == d[:, None], -mx.inf, log_p)
    else:  # accept with min(1, p/q); residual (p - q)+
        q_d = mx.exp(mx.take_along_axis(draft.log_q, d[:, None], axis=-1)[:, 0])
        accepted = u * q_d < p_d
        residual = mx.log(mx.maximum(mx.exp(log_p) - mx.exp(draft.log_q), 0.0))
    resampled = sample(residual, k_resample, False)
    bonus = sample(filtered[k:], k_bonus, False)
    return mx.concatenate([mx.where(accepted, d, resampled), bonus]), accepted


def verify_logits(
    logits: mx.array,
    draft: Draft,
    *,
    processors: tuple[LogitsProcessor, ...],
    sampling: SamplingParams,
    logprobs: LogprobRequest | None,
    prompt: mx.array,
    generated: mx.array,
    key: mx.array | None,
    bitmask: mx.array | None = None,
) -> Verified:
    """Process, filter and test ``(k + 1, V)`` float32 target ``logits`` (lazy).

    Args:
        logits: The target's raw logits at ``[y, d_1..d_k]``.
        draft: The drafts being verified.
        processors: The call's processors, in order.
        sampling: The call's sampling filters.
        logprobs: What to report for each position (``None``: nothing).
        prompt: The prompt ids ``(P,)``.
        generated: The generated ids so far ``(n,)``, ``y`` last.
        key: This verification's PRNG key (unused when greedy).
        bitmask: ``(k + 1, W)`` constraint masks, row ``i`` for position ``i``
            (:meth:`~mlx_gen.constraints.Matcher.masks_along`), applied after the
            processors and before the filters, as in guided decoding; ``None``: none.

    Returns:
        The lazy :class:`Verified` result.
    """
    processed = process_positions(
        logits, processors, prompt=prompt, generated=generated, drafts=draft.tokens
    )
    if bitmask is not None:
        processed = apply_token_bitmask(processed, bitmask)
    filtered = filter_logits(processed, sampling)
    tokens, accepted = choose(filtered, draft, sampling, key)
    packed = None
    if logprobs is not None:
        sources = {"raw": logits, "processed": filtered}
        rows = mx.concatenate([sources[m] for m in logprobs.modes])
        packed = pack(rows, mx.concatenate([tokens] * len(logprobs.modes)), logprobs)
    # A position with nothing to sample from (every id banned, a NaN) reads back NO_TOKEN,
    # as in plain decoding; a raw report needs finite raw logits too.
    raw = logprobs is not None and "raw" in logprobs.modes
    tokens = mark(tokens, has_choice(filtered, *([logits] if raw else [])))
    return Verified(tokens, accepted, packed)


class Round(NamedTuple):
    """A verification round, read back: ``tokens[:accepted + 1]`` are output.

    Attributes:
        tokens: The token chosen at each of the ``k + 1`` positions.
        accepted: The leading drafts accepted (``0..k``).
        rows: The packed logprob rows (mode-major: position ``i``'s are ``rows[i::k + 1]``),
            or ``None``.
    """

    tokens: list[int]
    accepted: int
    rows: list[list[float]] | None


def verify_draft(
    model: LoadedModel,
    layers: list[Any],
    plan: DecodePlan,
    last: int,
    draft: Draft,
    *,
    prompt: mx.array,
    generated: Sequence[int],
    key: mx.array | None,
    bitmask: mx.array | None,
) -> Round:
    """Run ``[last, *draft]`` through the target on the KV cache ``layers`` (which keep
    all ``k + 1`` positions: the caller trims the rejected ones), verify it with
    :func:`verify_logits` under ``plan``, and read the result back (one sync).

    Runs on the caller's stream; ``generated`` ends with ``last``.
    """
    inputs = mx.concatenate([mx.array([last], dtype=mx.int32), draft.tokens])
    logits = model.model(inputs[None], cache=layers)[0]  # (k + 1, V)
    result = verify_logits(
        logits.astype(mx.float32), draft, processors=plan.processors, sampling=plan.sampling,
        logprobs=plan.logprobs, prompt=prompt, generated=mx.array(generated, dtype=mx.int32),
        key=key, bitmask=bitmask,
    )  # fmt: skip
    packed = [result.packed] if result.packed is not None else []
    mx.eval(result.tokens, result.accepted, *packed)
    accepted = result.accepted.tolist()
    a = accepted.index(False) if False in accepted else len(accepted)
    rows = result.packed.tolist() if result.packed is not None else None
    return Round(result.tokens.tolist(), a, rows)
