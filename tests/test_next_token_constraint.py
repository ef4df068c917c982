"""``next_token_distribution(mode="processed")`` applies ``settings.constraint`` (issue 23,
item 3): the first generated token's distribution, as generation samples it."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

import mlx_gen as mg
from tests.conftest import STORIES

S = mg.GenerationSettings


@pytest.fixture(scope="module")
def stories():
    if not (STORIES / "config.json").exists():
        pytest.skip(f"{STORIES} is absent")
    return mg.load(STORIES)


@pytest.mark.parametrize(
    "extra",
    [{}, {"temperature": 0.7, "top_k": 5, "seed": 1}, {"repetition_penalty": 1.5, "min_p": 0.05}],
    ids=["greedy", "top_k", "penalty"],
)
def test_processed_distribution_under_a_constraint_is_the_first_tokens(stories, extra):
    constraint = mg.Regex("[a-z]+ [0-9]")
    settings = S(constraint=constraint, **extra)
    dist = mg.next_token_distribution(stories, "Once", mode="processed", settings=settings)
    logprobs = np.array(dist.logprobs.tolist())
    # The reference: a 1-token constrained generate's processed report over the vocabulary.
    one = dataclasses.replace(
        settings, max_tokens=1, logprobs=stories.vocab_size, logprobs_modes=("processed",)
    )
    report = mg.generate(stories, "Once", settings=one)
    want = np.full(stories.vocab_size, -np.inf)
    for token, value in report.logprobs[0]["processed"].top:
        want[token] = value
    allowed = np.isfinite(want)
    assert 0 < allowed.sum() < stories.vocab_size  # the grammar forbids most ids
    assert np.array_equal(np.isfinite(logprobs), allowed)  # forbidden ids: -inf, p = 0
    np.testing.assert_allclose(logprobs[allowed], want[allowed], atol=1e-5)
    assert math.isclose(float(np.exp(logprobs[allowed]).sum()), 1.0, abs_tol=1e-5)
    assert all(allowed[i] for i, p in dist.top if p > 0)


def test_raw_mode_ignores_the_constraint_and_a_bad_one_is_refused(stories):
    raw = mg.next_token_distribution(stories, "Once", settings=S(constraint=mg.Regex("[0-9]")))
    plain = mg.next_token_distribution(stories, "Once")
    assert raw.logprobs.tolist() == plain.logprobs.tolist()
    with pytest.raises(ValueError, match="first token"):
        mg.next_token_distribution(
            stories, "Once", mode="processed", settings=S(constraint=mg.JsonSchema({"$ref": "#"}))
        )
