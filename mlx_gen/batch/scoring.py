"""Teacher-forced scoring of many (prompt, continuation) pairs, batched.

:func:`score_batch` gives, per pair, what :func:`~mlx_gen.scoring.score` gives: each
continuation token's ``raw`` logprob (see :mod:`mlx_gen.logprobs.report`), its rank, the
top-``n`` alternatives and the chosen ids' logprobs. Pairs of similar length are run
together: each group is right-padded (padding after a sequence never changes its
causal attention, and positions start at 0 for every row as they do alone) and run
through the model in chunks with mlx-lm's batch KV cache.
"""

from __future__ import annotations

from collections.abc import Sequence

import mlx.core as mx

from mlx_gen.batch.prefill import make_batch_cache
from mlx_gen.loading.loader import LoadedModel
from mlx_gen.logprobs.report import LogprobRequest, TokenLogprob, pack, unpack
from mlx_gen.prompts import Prompt
from mlx_gen.scoring import ScoreResult, encode_text_or_ids
from mlx_gen.validation import check_count, check_fits, context_length
from mlx_gen.validation import token_ids as token_ids_checked


def _encode_pairs(
    model: LoadedModel, pairs: Sequence[tuple[Prompt, Prompt]]
) -> list[tuple[list[int], list[int]]]:
    if isinstance(pairs, str) or not pairs:
        raise ValueError(
            f"pairs={pairs!r} is invalid: pass a non-empty list of (prompt, continuation)"
        )
    out, context = [], context_length(model.config)
    for i, pair in enumerate(pairs):
        if isinstance(pair, str) or len(pair) != 2:
            raise ValueError(f"pairs[{i}]={pair!r} is invalid: expected (prompt, continuation)")
        try:
            p_ids = encode_text_or_ids(model, pair[0], special=True)
            c_ids = encode_text_or_ids(model, pair[1], special=False, what="continuation")
            if not p_ids or not c_ids:
                empty = "prompt" if not p_ids else "continuation"
                raise ValueError(f"the {empty} is empty; score needs both non-empty")
            check_fits(len(p_ids) + len(c_ids), context, what="prompt + continuation",
                       generating=False)  # fmt: skip
        except ValueError as err:
            raise ValueError(f"pairs[{i}]: {err}") from None
        out.append((p_ids, c_ids))
    return out


def _targets(
    pairs: list[tuple[list[int], list[int]]], start: int, width: int
) -> tuple[list[int], list[int], list[int]]:
    """Rows of the ``(B * width, V)`` chunk that predict continuation tokens.

    Returns (flat row indices, target ids, owning pair per row).
    """
    rows, targets, owners = [], [], []
    for b, (p_ids, c_ids) in enumerate(pairs):
        ids = p_ids + c_ids
        for j in range(width):
            # Position start + j predicts ids[start + j + 1].
            target = start + j + 1
            if len(p_ids) <= target < len(ids):
                rows.append(b * width + j)
                targets.append(ids[target])
                owners.append(b)
    return rows, targets, owners


def _score_group(
    model: LoadedModel,
    pairs: list[tuple[list[int], list[int]]],
    request: LogprobRequest,
    chunk_size: int,
) -> list[list[TokenLogprob]]:
    inputs = [(p + c)[:-1] for p, c in pairs]
    length = max(len(x) for x in inputs)
    tokens = mx.array([x + [0] * (length - len(x)) for x in inputs], dtype=mx.int32)  # (B, L)
    cache = make_batch_cache(model.model, len(pairs))
    reports: list[list[TokenLogprob]] = [[] for _ in pairs]
    for start in range(0, length, chunk_size):
        chunk = tokens[:, start : start + chunk_size]
        logits = model.model(chunk, cache=cache)  # (B, T, V)
        rows, targets, owners = _targets(pairs, start, chunk.shape[1])
        if not rows:
            mx.eval([c.state for c in cache])
            continue
        flat = logits.reshape(-1, logits.shape[-1])[mx.array(rows)]  # (R, V)
        target = mx.array(targets, dtype=mx.int32)
        packed = pack(flat, target, request)
        mx.eval(packed, [c.state for c in cache])
        for owner, row, t in zip(owners, packed.tolist(), targets, strict=True):
            reports[owner].append(unpack(row, t, request))
    return reports


def score_batch(
    model: LoadedModel,
    pairs: Sequence[tuple[Prompt, Prompt]],
    *,
    top_n: int = 0,
    token_ids: Sequence[int] = (),
    batch_size: int = 8,
    chunk_size: int = 512,
) -> list[ScoreResult]:
    """Score each continuation after its prompt with teacher forcing, many pairs at once.

    Args:
        model: A loaded model.
        pairs: ``(prompt, continuation)`` pairs; a prompt is text (BOS added as the
            tokenizer does) or ids, a continuation text (no special tokens) or ids.
        top_n: Also report the top-``n`` alternatives at each position.
        token_ids: Also report these ids' logprobs at each position.
        batch_size: Pairs per forward pass (pairs are grouped by length).
        chunk_size: Positions per forward pass; memory grows with
            ``batch_size * chunk_size * vocab``.

    Returns:
        One :class:`~mlx_gen.scoring.ScoreResult` per pair, in input order, equal to
        ``score(model, prompt, continuation, top_n=..., token_ids=...)``.

    Raises:
        ValueError: An empty list, a malformed pair, an empty prompt or continuation
            (named by index), an id outside the vocabulary, or a bad size.
    """
    encoded = _encode_pairs(model, pairs)
    check_count("top_n", top_n, 0, model.vocab_size)
    check_count("batch_size", batch_size, 1)
    check_count("chunk_size", chunk_size, 1)
    ids = token_ids_checked(token_ids, model.vocab_size, what="token_ids")
    request = LogprobRequest(top_n, tuple(ids))
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]) + len(encoded[i][1]))
    results: dict[int, ScoreResult] = {}
    for g in range(0, len(order), batch_size):
        group = order[g : g + batch_size]
        reports = _score_group(model, [encoded[i] for i in group], request, chunk_size)
        for i, rows in zip(group, reports, strict=True):
            results[i] = ScoreResult(encoded[i][1], rows, sum(r.logprob for r in rows))
    return [results[i] for i in range(len(encoded))]
