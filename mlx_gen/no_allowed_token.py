"""When no token may be generated: the flag computed in the step, and how it is read.

Bans can leave nothing to sample from: every id suppressed, ``allowed_token_ids`` all
banned, a processor that writes ``-inf`` (or NaN) everywhere, NaN logits from the
model. Then generation ends with ``finish_reason="no_allowed_token"``; no banned id
and no NaN logprob is ever emitted.

The rule: the distribution sampled from must have a finite maximum. That excludes
"every entry ``-inf``", any NaN, and any ``+inf``: a ``+inf`` logit is no distribution
(softmax computes ``inf - inf``, so its logprobs would be NaN); it comes from an
overflow (``frequency_penalty=-1e308``) or a custom processor forcing a token that
way. To force a token, use ``logit_bias={id: inf}``, which rewrites the row to ``0`` for
the forced ids and ``-inf`` elsewhere, or write that row yourself.

The test stays lazy and adds no host read: :func:`has_choice` is one max-reduction per
row inside the step (``max`` propagates NaN), and :func:`mark` folds it into the
sampled id that is read anyway, as :data:`NO_TOKEN`.
"""

from __future__ import annotations

import mlx.core as mx

#: The id read back when a row had no token to choose from (never a real id).
NO_TOKEN = -1
#: The finish reason of a generation that ended because no token was allowed.
NO_ALLOWED_TOKEN = "no_allowed_token"


def has_choice(*distributions: mx.array) -> mx.array:
    """``(B,)`` bool: each row's maximum is finite (no NaN, no ``+inf``, not all ``-inf``).

    >>> import mlx.core as mx
    >>> rows = [[0.0, -mx.inf], [-mx.inf, -mx.inf], [1.0, mx.nan], [mx.inf, 0.0]]
    >>> has_choice(mx.array(rows)).tolist()
    [True, False, False, False]
    """
    ok = None
    for d in distributions:
        row = mx.isfinite(mx.max(d, axis=-1))
        ok = row if ok is None else ok & row
    return ok


def mark(tokens: mx.array, ok: mx.array) -> mx.array:
    """``tokens`` where ``ok``, else :data:`NO_TOKEN` (same shape, int32)."""
    return mx.where(ok, tokens, NO_TOKEN).astype(mx.int32)


def feedable(tokens: mx.array) -> mx.array:
    """``tokens`` safe to feed the model: :data:`NO_TOKEN` becomes id 0.

    The look-ahead step queued after a :data:`NO_TOKEN` is discarded, but it still
    runs, and a negative id must never reach the embedding.
    """
    return mx.maximum(tokens, 0)
