"""Log-probabilities of generated tokens, computed inside the lazy decode step.

Two modes, defined here and nowhere else:

* ``raw``: ``log_softmax`` of the model's logits, before any processor, temperature
  or truncation. Under greedy decoding this is the model's real value, never 0 by
  construction.
* ``processed``: ``log_softmax`` of the distribution actually sampled from: after the
  logits processors, then temperature and top-k/top-p/min-p when sampling. Tokens the
  processors or filters excluded are ``-inf``. Under greedy decoding there is no
  temperature or truncation, so it is the log-softmax of the processed logits.

Per step and mode the result holds the chosen token's logprob and 1-based rank, the
top-N alternatives sorted by descending logprob (ties by id), and the logprobs of
caller-chosen ids. All of it is packed into one float32 array per mode so that
reading it costs a single device-to-host transfer, and only when requested.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import mlx.core as mx

from mlx_gen.logprobs.logsumexp import logsumexp
from mlx_gen.logprobs.top_n import block_maxima, top_n_ids


@dataclass(frozen=True)
class TokenLogprob:
    """One step's logprob report in one mode.

    Attributes:
        token: The generated (or scored) token id.
        logprob: Its natural-log probability.
        rank: 1 + the number of ids with a strictly higher logprob.
        top: ``(id, logprob)`` pairs, highest first (empty when not requested).
        extra: Logprobs of the caller-chosen ids, ``{id: logprob}``.
    """

    token: int
    logprob: float
    rank: int
    top: tuple[tuple[int, float], ...] = ()
    extra: dict[int, float] | None = None


@dataclass(frozen=True)
class LogprobRequest:
    """What to report per step.

    Args:
        top_n: Number of alternatives (``0`` for the chosen token only).
        token_ids: Ids whose logprob is reported at every step.
        modes: ``"raw"`` and/or ``"processed"``.
    """

    top_n: int = 0
    token_ids: tuple[int, ...] = ()
    modes: tuple[str, ...] = ("raw",)


def pack(logits: mx.array, tokens: mx.array, request: LogprobRequest) -> mx.array:
    """Lazily normalise each row and gather its report into one float32 array.

    Args:
        logits: ``(B, V)`` logits of the distribution to report (any shift: the
            report is of ``log_softmax(logits)``).
        tokens: ``(B,)`` chosen ids.
        request: What to include.

    Returns:
        ``(B, 2 + 2 * top_n + len(token_ids))``: chosen logprob, rank, top ids, top
        logprobs, extra logprobs. Ids are exact in float32 below 2**24.
    """
    logits = logits.astype(mx.float32)
    n = min(request.top_n, logits.shape[-1])
    blocks = None
    # Only the normaliser is computed over the whole row; reported entries are
    # gathered first and shifted after (log_softmax is logits - logsumexp).
    if _fused_exp_pays(logits.shape[-1]):
        blocks = block_maxima(logits) if n > 0 else None
        row_max = mx.max(blocks[1], axis=-1, keepdims=True) if blocks is not None else None
        norm = logsumexp(logits, row_max)  # (B, 1)
    else:  # one kernel
        norm = mx.logsumexp(logits, axis=-1, keepdims=True)
    chosen = mx.take_along_axis(logits, tokens[:, None], axis=-1)  # (B, 1)
    rank = 1 + mx.sum(logits > chosen, axis=-1, keepdims=True)
    parts = [chosen - norm, rank.astype(mx.float32)]
    if n > 0:
        top_ids = top_n_ids(logits, n, blocks)
        # Unordered here; unpack() sorts the n pairs on the host, where n is small.
        parts += [top_ids.astype(mx.float32), mx.take_along_axis(logits, top_ids, axis=-1) - norm]
    if request.token_ids:
        parts.append(logits[:, mx.array(request.token_ids)] - norm)
    return mx.concatenate(parts, axis=-1)


def _fused_exp_pays(vocab: int) -> bool:
    """Whether :mod:`~mlx_gen.logprobs.logsumexp`'s polynomial ``exp`` beats ``mx.logsumexp``.

    Only on the CPU backend, whose ``exp`` is scalar, and only on rows of 1024 entries
    or more (measured there, (2, V) float32: 512 entries 19 against 34 us, 2048 entries
    56 against 33 us, 32000 entries 757 against 201 us). Elsewhere ``mx.logsumexp`` is
    one kernel where the polynomial takes several.
    """
    return vocab >= 1024 and mx.default_device().type == mx.cpu


def unpack(row: Sequence[float], token: int, request: LogprobRequest) -> TokenLogprob:
    """Turn one row of :func:`pack` (read to the host) into a :class:`TokenLogprob`."""
    n = request.top_n
    top_ids, top_vals = row[2 : 2 + n], row[2 + n : 2 + 2 * n]
    top = sorted(zip((int(i) for i in top_ids), top_vals, strict=True), key=lambda p: (-p[1], p[0]))
    extra = (
        dict(zip(request.token_ids, row[2 + 2 * n :], strict=True)) if request.token_ids else None
    )
    return TokenLogprob(token=token, logprob=row[0], rank=int(row[1]), top=tuple(top), extra=extra)
