"""What the command line prints: logprob tables and the JSON document.

Pure formatting: every function turns the public API's values into text (or a
JSON-ready dict) and prints nothing. ``--verbose`` output is :mod:`mlx_gen.cli.verbose`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from mlx_gen.generation import GenerationResult
from mlx_gen.logprobs.report import TokenLogprob
from mlx_gen.no_allowed_token import NO_ALLOWED_TOKEN
from mlx_gen.scoring import ScoreResult

Decode = Callable[[int], str]
MODE_TITLES = {
    "raw": "raw logprobs (the model's distribution)",
    "processed": "processed logprobs (the distribution sampled from)",
}


def show_token(text: str) -> str:
    """A token's text made visible: spaces as ``␣``, control characters escaped.

    >>> show_token(" Paris"), show_token("\\n"), show_token("")
    ('␣Paris', '\\\\n', "''")
    """
    if not text:
        return "''"
    return repr(text)[1:-1].replace("\\'", "'").replace(" ", "␣")


def show_prob(logprob: float) -> str:
    """``exp(logprob)`` as a percentage, or in scientific notation below 0.01%."""
    p = math.exp(logprob)
    return f"{p:.2%}" if p >= 1e-4 else ("0" if p == 0 else f"{p:.1e}")


def _cells(step: int, r: TokenLogprob, decode: Decode) -> list[str]:
    """One table row: step, token, id, logprob, probability, rank, extra ids' logprobs."""
    extra = [f"{v:.4f}" for v in (r.extra or {}).values()]
    prob, token = show_prob(r.logprob), show_token(decode(r.token))
    return [str(step), token, str(r.token), f"{r.logprob:.4f}", prob, str(r.rank), *extra]


def logprob_table(reports: Sequence[TokenLogprob], decode: Decode) -> str:
    """An aligned table: one row per token, then its top-N alternatives, highest first.

    Columns: ``#`` (step), ``token`` (readable), ``id``, ``logprob`` (natural log),
    ``prob``, ``rank`` (1 = most likely), ``lp[ID]`` per ``--logprob-token-ids`` id,
    then ``top-N``: a token and its probability per alternative.
    """
    if not reports:
        return "(no tokens)"
    extra = [f"lp[{i}]" for i in (reports[0].extra or {})]
    n_top = max(len(r.top) for r in reports)
    header = ["#", "token", "id", "logprob", "prob", "rank", *extra]
    header += ([f"top-{n_top}", ""] + ["", ""] * (n_top - 1)) if n_top else []
    rows = [header]
    for k, r in enumerate(reports):
        top = [c for i, lp in r.top for c in (show_token(decode(i)), show_prob(lp))]
        rows.append(_cells(k, r, decode) + top)
    widths = [max(len(row[c]) for row in rows if c < len(row)) for c in range(len(header))]
    first_top = len(header) - 2 * n_top
    left = {1} | set(range(first_top, len(header), 2))  # token columns
    lines = []
    for row in rows:
        cells = [
            v.ljust(w) if c in left else v.rjust(w)
            for c, (v, w) in enumerate(zip(row, widths, strict=False))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def logprob_line(step: int, reports: dict[str, TokenLogprob], decode: Decode) -> str:
    """One live ``--stream-logprobs`` line, labelled; several modes side by side."""
    first = next(iter(reports.values()))
    parts = []
    for mode, r in reports.items():
        label = f"{mode}: " if len(reports) > 1 else ""
        extra = "".join(f"  lp[{i}] {lp:.4f}" for i, lp in (r.extra or {}).items())
        top = ", ".join(f"{show_token(decode(i))} {show_prob(lp)}" for i, lp in r.top)
        parts.append(
            f"{label}logprob {r.logprob:8.4f}  prob {show_prob(r.logprob):>7}  rank {r.rank:>3}"
            + extra
            + (f"  top: {top}" if top else "")
        )
    head = f"{step:>4}  {show_token(decode(first.token)):<12} id {first.token:>6}  "
    return head + "  |  ".join(parts)


def logprob_tables(
    per_token: Sequence[dict[str, TokenLogprob]], modes: Sequence[str], decode: Decode
) -> str:
    """One titled :func:`logprob_table` per mode."""
    return "\n\n".join(
        f"{MODE_TITLES[m]}:\n" + logprob_table([t[m] for t in per_token], decode) for m in modes
    )


def score_total(result: ScoreResult) -> str:
    """``total logprob: -3.2145 over 5 tokens (mean -0.6429, perplexity 1.90)``."""
    n = len(result.token_ids)
    mean = result.total / n
    return (
        f"total logprob: {result.total:.4f} over {n} tokens "
        f"(mean {mean:.4f}, perplexity {math.exp(-mean):.2f})"
    )


# --- JSON (-inf is written as null: JSON has no infinity) ---


def _num(x: float) -> float | None:
    return x if math.isfinite(x) else None


def report_json(r: TokenLogprob, decode: Decode) -> dict[str, Any]:
    """One :class:`TokenLogprob` as a JSON-ready dict (``prob`` added)."""
    out: dict[str, Any] = {
        "token": r.token,
        "text": decode(r.token),
        "logprob": _num(r.logprob),
        "prob": math.exp(r.logprob),
        "rank": r.rank,
        "top": [{"id": i, "text": decode(i), "logprob": _num(lp)} for i, lp in r.top],
    }
    if r.extra is not None:
        out["extra"] = [{"id": i, "logprob": _num(lp)} for i, lp in r.extra.items()]
    return out


def generation_json(
    result: GenerationResult, decode: Decode, prompt_tokens: int, logprobs: bool
) -> dict[str, Any]:
    """The ``--json`` document of a generation (``logprobs`` null unless requested).

    Under a constraint it also has ``constraint_complete`` and ``finish_message``.
    """
    stats = result.stats
    doc = {
        "text": result.text,
        "token_ids": result.token_ids,
        "tokens": result.tokens,
        "logprobs": [{m: report_json(r, decode) for m, r in t.items()} for t in result.logprobs]
        if logprobs
        else None,
        "finish_reason": result.finish_reason,
        "matched": result.matched,
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(result.token_ids)},
        "timings": {
            "ttft_s": stats.time_to_first_token if stats else None,
            "prefill_tps": stats.prefill_tps if stats else None,
            "decode_tps": stats.decode_tps if stats else None,
        },
        "peak_memory_gb": stats.peak_memory_gb if stats else None,
    }
    if result.constraint_complete is not None:
        doc["constraint_complete"] = result.constraint_complete
        doc["finish_message"] = result.finish_message
    return doc


def constraint_note(result: GenerationResult) -> str | None:
    """A stderr line when a constraint ended generation or its output is incomplete."""
    if result.finish_reason == "constraint":
        return f"constraint: generation ended: {result.finish_message}"
    if result.constraint_complete is False:
        return (
            f"constraint: the output is incomplete (finish_reason {result.finish_reason!r} "
            "before the grammar completed; raise --max-tokens)"
        )
    return None


def no_token_note(result: GenerationResult) -> str | None:
    """The stderr line when generation ended because no token was allowed, else ``None``."""
    if result.finish_reason != NO_ALLOWED_TOKEN:
        return None
    return (
        f"{NO_ALLOWED_TOKEN}: generation stopped after {len(result.token_ids)} token(s): no "
        "token was allowed at the next step (every id banned by --suppress-tokens, "
        "--begin-suppress-tokens, --bad-words or a -inf --logit-bias, or NaN logits)"
    )


def score_json(result: ScoreResult, decode: Decode, prompt_tokens: int) -> dict[str, Any]:
    """The ``--score --json`` document."""
    return {
        "token_ids": result.token_ids,
        "tokens": [decode(i) for i in result.token_ids],
        "logprobs": [{"raw": report_json(r, decode)} for r in result.logprobs],
        "total_logprob": result.total,
        "usage": {"prompt_tokens": prompt_tokens, "continuation_tokens": len(result.token_ids)},
    }
