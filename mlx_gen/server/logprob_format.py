"""Engine logprob reports → OpenAI's logprob shapes (chat entries and the legacy lists).

Values are the engine's own (see :mod:`mlx_gen.logprobs.report`), natural logs, top
entries sorted highest first. JSON has no ``-inf``: a token the processors excluded
(processed mode only) is reported as ``-9999.0``, as OpenAI does for negligible tokens.
The chosen token's logprob and a top entry for the same id are the same float.
"""

from __future__ import annotations

import math

from mlx_gen.logprobs.report import TokenLogprob
from mlx_gen.server.responses import LegacyLogprobs, LogprobEntry, ProcessedLogprob, TopLogprob
from mlx_gen.server.token_text import TokenText

FLOOR = -9999.0


def finite(value: float) -> float:
    """``value`` with ``-inf`` (and NaN) mapped to ``-9999.0`` for JSON."""
    return value if math.isfinite(value) else FLOOR


def _top(texts: TokenText, report: TokenLogprob) -> list[TopLogprob]:
    return [
        TopLogprob(token=texts.text_of(i), logprob=finite(lp), bytes=list(texts.bytes_of(i)), id=i)
        for i, lp in report.top
    ]


def chat_entry(
    texts: TokenText, reports: dict[str, TokenLogprob], modes: tuple[str, ...]
) -> LogprobEntry:
    """One chat logprob entry: the first mode's values, the processed ones as extension."""
    main = reports[modes[0]]
    processed = None
    if len(modes) > 1:
        other = reports[modes[1]]
        processed = ProcessedLogprob(
            logprob=finite(other.logprob), rank=other.rank, top_logprobs=_top(texts, other)
        )
    extra = None
    if main.extra is not None:
        extra = {str(i): finite(lp) for i, lp in main.extra.items()}
    return LogprobEntry(
        token=texts.text_of(main.token),
        logprob=finite(main.logprob),
        bytes=list(texts.bytes_of(main.token)),
        id=main.token,
        rank=main.rank,
        top_logprobs=_top(texts, main),
        token_id_logprobs=extra,
        processed=processed,
    )


def legacy_entry(texts: TokenText, report: TokenLogprob | None, token: int, top: int) -> tuple:
    """``(text, logprob or None, {text: logprob} or None, {id: logprob} or None)``.

    The top dict holds the ``top`` best entries and the chosen token (vLLM's rule), the
    first entry winning when two ids render the same text. The last dict holds the
    ``logprob_token_ids`` asked for (as chat's ``token_id_logprobs``), keys as strings.
    """
    text = texts.text_of(token)
    if report is None:
        return text, None, None, None
    entries: dict[str, float] = {}
    for i, lp in report.top[:top]:
        entries.setdefault(texts.text_of(i), finite(lp))
    entries.setdefault(text, finite(report.logprob))
    extra = None
    if report.extra is not None:
        extra = {str(i): finite(lp) for i, lp in report.extra.items()}
    return text, finite(report.logprob), entries, extra


def legacy_logprobs(entries: list[tuple], offset: int) -> LegacyLogprobs:
    """Assemble :func:`legacy_entry` rows; ``text_offset`` counts from ``offset``.

    ``token_id_logprobs`` is set when some row has ``logprob_token_ids`` values.
    """
    offsets = []
    for text, *_ in entries:
        offsets.append(offset)
        offset += len(text)
    return LegacyLogprobs(
        tokens=[e[0] for e in entries],
        token_logprobs=[e[1] for e in entries],
        top_logprobs=[e[2] for e in entries],
        text_offset=offsets,
        token_id_logprobs=[e[3] for e in entries] if any(e[3] for e in entries) else None,
    )
