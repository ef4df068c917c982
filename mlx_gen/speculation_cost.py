"""Whether speculation pays, measured on this backend and these weights; its counters.

Verifying ``k`` drafts is one forward pass over ``k + 1`` positions. On Metal (and on
the CPU with float weights) that costs little more than one token, so accepted drafts
are nearly free tokens; on MLX's CPU backend a quantized matmul costs about ``k + 1``
times one token's, and no acceptance rate can pay for it. No constant can tell the two
apart, so :class:`CostModel` measures both sides while the call runs:

* ``step``: seconds per token of plain pipelined decoding (read to read);
* ``per_draft``: what each drafted position adds to a round, ``(round - step) / k``
  (drafting, verification and the host reads of one round, over its ``k`` drafts);
* ``alpha``: the fraction of drafts accepted (exponential averages of all three).

With ``r = per_draft / step``, a round of ``k`` drafts yields ``E(k) = (1 - alpha^(k+1)) /
(1 - alpha)`` tokens for ``1 + r k`` plain steps of time. :meth:`CostModel.length` picks the
``k`` with the best ``E(k) / (1 + r k)`` and drafts only when that beats plain decoding by
``MARGIN``. When even ``alpha = 1`` cannot pay (``r >= 1 / MARGIN``), drafting stops for the
rest of the call (``decision = "off: ..."``); when only the acceptance is too low, plain
decoding runs and a round is tried again after :data:`RETRY_AFTER` tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

MARGIN = 1.05  # speculation must beat plain decoding by 5% to be chosen
RETRY_AFTER = 32  # plain tokens before a low-acceptance call tries drafting again
PLAIN_FIRST = 2  # plain steps timed before the first round
PROBE = 2  # drafts in the first (measuring) round: at most 2 steps lost where it cannot pay
_WEIGHT = 0.3  # of the newest observation in the exponential averages


@dataclass
class SpeculationStats:
    """Counters of one speculative call (pass one in to read them afterwards).

    Attributes:
        rounds: Verification passes that checked at least one draft.
        drafted: Draft tokens verified.
        accepted: Draft tokens accepted.
        plain_tokens: Tokens decoded by plain steps (not in a verification round).
        step_s: Measured seconds per plain pipelined step (``None``: not measured).
        per_draft_s: Measured seconds each drafted position adds to a round.
        decision: The cost model's last decision, e.g. ``"draft 4"``, ``"off: ..."``.
    """

    rounds: int = 0
    drafted: int = 0
    accepted: int = 0
    plain_tokens: int = 0
    step_s: float | None = None
    per_draft_s: float | None = None
    decision: str = "measuring"

    @property
    def acceptance_rate(self) -> float:
        """``accepted / drafted`` (0 when nothing was drafted)."""
        return self.accepted / self.drafted if self.drafted else 0.0


def _average(old: float | None, new: float) -> float:
    return new if old is None else (1 - _WEIGHT) * old + _WEIGHT * new


def expected_tokens(alpha: float, k: int) -> float:
    """Tokens one round of ``k`` drafts yields when each draft is accepted with ``alpha``.

    >>> expected_tokens(0.0, 4), expected_tokens(1.0, 4), round(expected_tokens(0.5, 2), 2)
    (1.0, 5.0, 1.75)
    """
    if alpha >= 1.0:
        return k + 1.0
    return (1.0 - alpha ** (k + 1)) / (1.0 - alpha)


class CostModel:
    """Measured costs of plain steps and verification rounds; chooses the draft length.

    Args:
        stats: Where the measurements and the decision are reported.
        enabled: ``False``: measure, but always draft ``limit`` tokens.

    >>> m = CostModel(SpeculationStats())
    >>> m.plain(0.010); m.plain(0.010)
    >>> m.round(k=4, seconds=0.050, accepted=4)   # each draft costs a whole step (4-bit CPU)
    >>> m.length(8), m.stats.decision
    (0, 'off: a drafted position costs 1.00 plain steps')
    >>> fast = CostModel(SpeculationStats())
    >>> fast.plain(0.010); fast.plain(0.010); fast.round(k=4, seconds=0.012, accepted=3)
    >>> fast.length(8) > 0
    True
    """

    def __init__(self, stats: SpeculationStats, *, enabled: bool = True) -> None:
        self.stats, self.enabled = stats, enabled
        self.alpha: float | None = None
        self.plain_steps = 0
        self.off = False
        self.since_round = 0

    def plain(self, seconds: float) -> None:
        """One plain pipelined step took ``seconds`` (read to read)."""
        self.stats.step_s = _average(self.stats.step_s, seconds)
        self.plain_steps += 1
        self.since_round += 1

    def round(self, *, k: int, seconds: float, accepted: int) -> None:
        """A round verified ``k >= 1`` drafts in ``seconds`` and accepted ``accepted``."""
        self.since_round = 0
        self.alpha = _average(self.alpha, accepted / k)
        if self.stats.step_s is not None:
            extra = max(seconds - self.stats.step_s, 0.0) / k
            self.stats.per_draft_s = _average(self.stats.per_draft_s, extra)

    def length(self, limit: int) -> int:
        """How many tokens to draft now (at most ``limit``; 0: decode plainly)."""
        stats = self.stats
        if not self.enabled:
            stats.decision = "always draft (measure_cost=False)"
            return max(limit, 0)
        if self.off or limit <= 0:
            return 0
        if self.plain_steps < PLAIN_FIRST:
            stats.decision = "measuring"
            return 0
        if stats.per_draft_s is None:  # no round yet: a short one to measure
            stats.decision = "measuring"
            return min(limit, PROBE)
        r = stats.per_draft_s / max(stats.step_s, 1e-9)
        if r * MARGIN >= 1.0:  # not even full acceptance can pay
            self.off = True
            stats.decision = f"off: a drafted position costs {r:.2f} plain steps"
            return 0
        best_k, best = 0, 1.0
        for k in range(1, limit + 1):
            gain = expected_tokens(self.alpha, k) / (1.0 + r * k)
            if gain > best:
                best_k, best = k, gain
        if best < MARGIN and self.since_round < RETRY_AFTER:
            stats.decision = f"plain: acceptance {self.alpha:.2f} does not pay (r={r:.2f})"
            return 0
        k = best_k if best >= MARGIN else 1  # a cheap probe after RETRY_AFTER plain tokens
        stats.decision = f"draft {k} (acceptance {self.alpha:.2f}, r={r:.2f})"
        return k
