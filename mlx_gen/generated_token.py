"""One generated token as every decode loop reports it (plain, guided, batched, speculative)."""

from __future__ import annotations

from dataclasses import dataclass, field

from mlx_gen.logprobs.report import TokenLogprob


@dataclass(frozen=True)
class GeneratedToken:
    """One generated token.

    Attributes:
        token: The id.
        step: Its position among generated tokens (0 = first).
        logprobs: ``{"raw": ..., "processed": ...}`` for the requested modes.
        finish_reason: ``"stop"`` (an EOS id), ``"length"``, ``"no_allowed_token"``
            (every id banned or NaN logits), ``"constraint"`` (the constraint and the
            other controls left nothing allowed; see :mod:`mlx_gen.guided`), or ``None``
            if more follow. The two token-less finishes carry ``token == NO_TOKEN`` (-1).
        constraint_complete: Under a constraint, whether the tokens so far form a
            complete match; ``None`` without one.
        finish_message: Why a ``"constraint"`` finish happened.
        grammar: Under a constraint (tool grammars included), what its mask did to this
            token: ``"forced"`` (it was the only allowed id), ``"masked"`` (some ids were
            disallowed) or ``"free"`` (in speculative runs too: the mask of the position
            it was verified at); ``None`` without a constraint.
    """

    token: int
    step: int
    logprobs: dict[str, TokenLogprob] = field(default_factory=dict)
    finish_reason: str | None = None
    constraint_complete: bool | None = None
    finish_message: str | None = None
    grammar: str | None = None
