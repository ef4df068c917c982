"""Speculative sampling follows exactly the non-speculative distribution (chi-square tests).

* End to end on stories260K: 2,000 seeded prompt-lookup runs of two tokens (one draft) against the
  exact joint distribution of non-speculative sampling, computed in numpy from the
  model's logits with the same processors (repetition penalty, logit bias) and filters
  (temperature, top-k). The samples must also reject the raw (unprocessed) distribution,
  so the test can tell the two apart.
* The acceptance rules alone (:func:`mlx_gen.verify.choose`), on 20,000 independent
  positions of a known distribution: a deterministic drafter (accept with ``p(d)``,
  residual ``p`` without ``d``) and a sampling drafter (``min(1, p/q)``, residual
  ``(p - q)+``).
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

import mlx_gen as mg
from mlx_gen.drafters import Draft
from mlx_gen.sampling import SamplingParams
from mlx_gen.speculative import SpeculationStats, speculative_generate_tokens
from mlx_gen.verify import choose
from tests.conftest import STORIES

PROMPT = "Lily went to the park. Lily went to the"
TEMPERATURE, TOP_K, PENALTY, BIAS = 1.3, 6, 1.3, {282: -1.0, 265: 1.5}


def processed_probs(logits: np.ndarray, context: list[int], *, processors: bool) -> np.ndarray:
    """numpy reference: HF repetition penalty → logit bias → temperature → top-k → softmax."""
    x = logits.astype(np.float64).copy()
    if processors:
        seen = np.unique(context)
        x[seen] = np.where(x[seen] > 0, x[seen] / PENALTY, x[seen] * PENALTY)
        for i, b in BIAS.items():
            x[i] += b
    x = x / TEMPERATURE
    x[x < np.sort(x)[-TOP_K]] = -np.inf
    p = np.exp(x - x.max())
    return p / p.sum()


def exact_joint(model: mg.LoadedModel, ids: list[int], *, processors: bool) -> dict:
    """``{(t0, t1): probability}`` of the first two sampled tokens."""

    def last_logits(seq: list[int]) -> np.ndarray:
        out = model.model(mx.array(seq)[None])[0, -1].astype(mx.float32)
        return np.array(out)

    p0 = processed_probs(last_logits(ids), ids, processors=processors)
    joint = {}
    for t0 in np.flatnonzero(p0):
        p1 = processed_probs(last_logits(ids + [int(t0)]), ids + [int(t0)], processors=processors)
        for t1 in np.flatnonzero(p1):
            joint[(int(t0), int(t1))] = p0[t0] * p1[t1]
    return joint


def chi_square_z(observed, expected) -> float:
    """Pearson's statistic as a standard-normal z (Wilson-Hilferty; numpy only).

    ``z > 3.09`` is ``p < 1e-3``; ``z > 4.75`` is ``p < 1e-6``.
    """
    observed, expected = np.asarray(observed, float), np.asarray(expected, float)
    stat, df = ((observed - expected) ** 2 / expected).sum(), len(observed) - 1
    return ((stat / df) ** (1 / 3) - (1 - 2 / (9 * df))) / np.sqrt(2 / (9 * df))


def pooled_z(counts: dict, expected: dict, n: int) -> float:
    """Goodness of fit, cells with expected count < 5 pooled into one."""
    big = [c for c, p in expected.items() if p * n >= 5]
    observed = [counts.get(c, 0) for c in big]
    wanted = [expected[c] * n for c in big]
    observed.append(n - sum(observed))
    wanted.append(n - sum(wanted))
    return chi_square_z(observed, wanted)


def test_prompt_lookup_sampling_matches_the_exact_distribution():
    if not (STORIES / "config.json").exists():
        pytest.skip(f"{STORIES} is absent")
    model = mg.load(STORIES)
    ids = model.tokenizer.encode(PROMPT)
    settings = dict(
        max_tokens=2, temperature=TEMPERATURE, top_k=TOP_K, repetition_penalty=PENALTY,
        logit_bias=BIAS, ignore_eos=True,
        speculative=mg.PromptLookup(num_draft=3, measure_cost=False),
    )  # fmt: skip
    cache, stats, n, counts = mg.PromptCache(model.model), SpeculationStats(), 2000, {}
    for seed in range(n):
        run = speculative_generate_tokens(
            model,
            ids,
            mg.GenerationSettings(**settings, seed=seed),
            prompt_cache=cache,
            stats=stats,
        )
        pair = tuple(t.token for t in run)
        counts[pair] = counts.get(pair, 0) + 1
    # One draft per run (the second token is the bonus or the resampled one); both the
    # acceptance and the rejection path ran often.
    assert stats.rounds == stats.drafted == n
    assert 0.1 * n < stats.accepted < 0.9 * n
    assert pooled_z(counts, exact_joint(model, ids, processors=True), n) < 3.09  # p > 1e-3
    assert pooled_z(counts, exact_joint(model, ids, processors=False), n) > 4.75  # p < 1e-6


@pytest.mark.parametrize("sampling_drafter", [False, True])
def test_acceptance_rule_keeps_the_target_distribution(sampling_drafter):
    p = np.array([0.4, 0.25, 0.15, 0.1, 0.06, 0.04, 0.0])  # the target (one token filtered out)
    q = np.array([0.1, 0.1, 0.3, 0.3, 0.1, 0.05, 0.05])  # the drafter, often wrong
    n, rng = 20000, np.random.default_rng(0)
    drafts = rng.choice(len(q), size=n, p=q) if sampling_drafter else np.full(n, 2)
    with np.errstate(divide="ignore"):
        filtered = mx.array(np.tile(np.log(p), (n + 1, 1)).astype(np.float32))
        log_q = mx.array(np.tile(np.log(q), (n, 1)).astype(np.float32))
    draft = Draft(mx.array(drafts.astype(np.int32)), log_q if sampling_drafter else None)
    tokens, accepted = choose(filtered, draft, SamplingParams(temperature=1.0), mx.random.key(3))
    tokens, accepted = np.array(tokens[:n]), np.array(accepted)
    counts = np.bincount(tokens, minlength=len(p))
    assert counts[6] == 0
    assert chi_square_z(counts[:6], p[:6] * n) < 3.09  # p > 1e-3
    expected_accept = np.minimum(p, q).sum() if sampling_drafter else p[2]
    assert accepted.mean() == pytest.approx(expected_accept, abs=0.02)
    assert np.array_equal(tokens[accepted], drafts[accepted])
