"""Teacher-forced scoring of given text, and the full next-token distribution.

``score`` runs prompt + continuation through the model once (chunked, with a KV
cache) and reports each continuation token's ``raw`` logprob (see
:mod:`mlx_gen.logprobs.report`). Greedy generation's raw logprobs equal ``score`` of the same
tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import mlx.core as mx

from mlx_gen.constraints import Matcher, apply_token_bitmask
from mlx_gen.controls import build_processors
from mlx_gen.loading.loader import LoadedModel
from mlx_gen.logprobs.logsumexp import log_softmax
from mlx_gen.logprobs.report import LogprobRequest, TokenLogprob, pack, unpack
from mlx_gen.no_allowed_token import has_choice
from mlx_gen.plan import compiled_constraint
from mlx_gen.processors.context import ProcessorContext
from mlx_gen.prompt_cache import PromptCache
from mlx_gen.prompts import Messages, Prompt, encode_prompt
from mlx_gen.sampling import filter_logits
from mlx_gen.settings import GenerationSettings
from mlx_gen.validation import (
    check_count,
    check_fits,
    check_text,
    context_length,
    run_processors,
    truncated,
)
from mlx_gen.validation import token_ids as checked_ids


@dataclass(frozen=True)
class ScoreResult:
    """Teacher-forced logprobs of a continuation.

    Attributes:
        token_ids: The continuation's ids.
        logprobs: One raw :class:`TokenLogprob` per continuation token.
        total: The sum of the logprobs (the continuation's log-likelihood).
    """

    token_ids: list[int]
    logprobs: list[TokenLogprob]
    total: float


def encode_text_or_ids(
    model: LoadedModel, value: Prompt, *, special: bool, what: str = "prompt"
) -> list[int]:
    """Ids of ``value``: text is encoded (with special tokens when ``special``), ids kept.

    Raises:
        ValueError: An id outside the vocabulary (named with its position in ``what``).
    """
    if isinstance(value, str):
        check_text(value, what)
        value = model.tokenizer.encode(value, add_special_tokens=special)
    return checked_ids(value, model.vocab_size, what=what)


def score(
    model: LoadedModel,
    prompt: Prompt,
    continuation: Prompt,
    *,
    top_n: int = 0,
    token_ids: Sequence[int] = (),
    chunk_size: int = 512,
) -> ScoreResult:
    """Score ``continuation`` after ``prompt`` with teacher forcing.

    Args:
        model: A loaded model.
        prompt: Text (BOS added as the tokenizer does) or ids.
        continuation: Text (encoded without special tokens) or ids.
        top_n: Also report the top-``n`` alternatives at each position.
        token_ids: Also report these ids' logprobs at each position.
        chunk_size: Tokens per forward pass.

    Raises:
        ValueError: An empty prompt or continuation, an id outside the vocabulary (its
            position named), or prompt + continuation longer than the model's context.
    """
    p_ids = encode_text_or_ids(model, prompt, special=True)
    c_ids = encode_text_or_ids(model, continuation, special=False, what="continuation")
    if not p_ids:
        raise ValueError("score(): the prompt is empty: pass at least one token or character")
    if not c_ids:
        shown = repr(continuation) if len(repr(continuation)) <= 60 else "the continuation"
        raise ValueError(
            f"score(): continuation={shown} encodes to no token (whitespace alone may), so "
            "there is nothing to score: pass text or ids with at least one token"
        )
    check_fits(
        len(p_ids) + len(c_ids),
        context_length(model.config),
        what="prompt + continuation",
        generating=False,
    )
    check_count("top_n", top_n, 0, model.vocab_size)
    check_count("chunk_size", chunk_size, 1)
    token_ids = checked_ids(token_ids, model.vocab_size, what="token_ids")
    ids = p_ids + c_ids
    request = LogprobRequest(top_n, tuple(token_ids))
    cache, rows = PromptCache(model.model), []
    for start in range(0, len(ids) - 1, chunk_size):
        chunk = ids[start : min(start + chunk_size, len(ids) - 1)]
        logits = model.model(mx.array(chunk, dtype=mx.int32)[None], cache=cache.layers)[0]
        # Position i predicts ids[i + 1]; keep rows that predict continuation tokens.
        targets = ids[start + 1 : start + 1 + len(chunk)]
        keep = [j for j in range(len(chunk)) if start + 1 + j >= len(p_ids)]
        if keep:
            sel = logits[mx.array(keep)]
            tgt = mx.array([targets[j] for j in keep], dtype=mx.int32)
            packed = pack(sel, tgt, request)
            mx.eval(packed)
            rows += [
                unpack(r, t, request) for r, t in zip(packed.tolist(), tgt.tolist(), strict=True)
            ]
    return ScoreResult(c_ids, rows, sum(r.logprob for r in rows))


@dataclass(frozen=True)
class Distribution:
    """The next-token distribution after a prompt.

    Attributes:
        probs: ``(V,)`` float32 probabilities summing to 1; excluded tokens are 0.
        logprobs: ``(V,)`` log-probabilities; excluded tokens are ``-inf``.
        top: The ``top_n`` most likely ``(id, probability)`` pairs, highest first.
    """

    probs: mx.array
    logprobs: mx.array
    top: list[tuple[int, float]]


def next_token_distribution(
    model: LoadedModel,
    prompt: Prompt | None = None,
    *,
    messages: Messages | None = None,
    mode: str = "raw",
    settings: GenerationSettings | None = None,
    top_n: int = 10,
) -> Distribution:
    """The full distribution of the token after ``prompt``.

    Args:
        model: A loaded model.
        prompt: Text or ids (or ``messages`` for a chat prompt).
        mode: ``"raw"`` (the model's softmax) or ``"processed"``: the distribution the
            first generated token is sampled from under ``settings``: its processors,
            then its constraint's first mask (ids the grammar forbids get probability 0
            and logprob ``-inf``; the rest are renormalised), then its sampling filters,
            exactly as generation applies them (so these are the ``processed`` logprobs
            a 1-token ``generate`` reports).
        settings: Options for ``"processed"``.
        top_n: How many top entries to list.

    Raises:
        ValueError: An unknown mode, an empty prompt, an id outside the vocabulary, a
            prompt that does not fit the model's context, a constraint that does not
            compile, or no token allowed (every id banned or forbidden by the
            constraint, or NaN logits).
    """
    if mode not in ("raw", "processed"):
        raise ValueError(f"mode={mode!r} is invalid; valid: 'raw', 'processed'")
    check_count("top_n", top_n, 0, model.vocab_size)
    settings = settings or GenerationSettings()
    ids = encode_prompt(model.tokenizer, prompt, messages=messages)
    ids = truncated(checked_ids(ids, model.vocab_size), settings.truncate_prompt)
    check_fits(len(ids), context_length(model.config))
    prompt_ids = mx.array(ids, dtype=mx.int32)
    logits = model.model(prompt_ids[None])[:, -1, :].astype(mx.float32)
    if mode == "processed":
        defaults = model.generation_config
        ctx = ProcessorContext(prompt_ids, mx.zeros((0,), mx.int32), 0)  # the first position
        processors = build_processors(
            settings,
            defaults,
            tokenizer=model.tokenizer,
            vocab_size=model.vocab_size,
            eos_token_ids=settings.eos_set(defaults),
        )
        processed = run_processors(processors, logits, ctx)
        constraint = compiled_constraint(model, settings)
        if constraint is not None:  # after the processors, before the filters (guided.py)
            mask = Matcher(constraint).mask()
            processed = apply_token_bitmask(processed, mx.array(mask))
        logits = filter_logits(processed, settings.sampling(defaults))
    if not has_choice(logits).item():
        raise ValueError(
            f"no token is allowed after this prompt ({mode} mode): every id is banned "
            "or forbidden by the constraint, or the logits are NaN; there is no "
            "distribution to report"
        )
    logprobs = log_softmax(logits)[0]
    probs = mx.exp(logprobs)
    order = mx.argsort(-logprobs)[:top_n]
    mx.eval(probs, order)
    return Distribution(probs, logprobs, [(i, probs[i].item()) for i in order.tolist()])
