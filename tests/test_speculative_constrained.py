"""Speculative decoding under a constraint: drafts cut by the grammar, masks at every position.

* Greedy: every constraint kind × drafter × control gives the plain constrained output
  token for token (logprobs within 1e-4, the same finish and ``constraint_complete``),
  and drafts were really verified (some accepted; the noisy drafter also rejected).
* Sampled: 1,500 seeded prompt-lookup runs of two tokens under a regex follow the exact
  joint distribution of plain constrained sampling, computed in numpy from the model's
  logits with the grammar's masks (and are far from the unmasked one).
* Nothing allowed (a processor removes every id the grammar allows) ends with
  ``finish_reason="constraint"`` exactly where plain constrained decoding ends.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace

import mlx.core as mx
import numpy as np
import pytest

import mlx_gen as mg
from mlx_gen.constraints import Matcher
from mlx_gen.plan import DecodePlan
from mlx_gen.speculative import SpeculationStats, speculative_generate_tokens
from tests.conftest import STORIES
from tests.test_speculative import (  # noqa: F401 (fixtures)
    CONTROLS,
    assert_same_tokens,
    drafter,
    noisy_draft,
    story,
)
from tests.test_speculative_sampling import BIAS, PENALTY, TEMPERATURE, TOP_K, pooled_z

pytestmark = pytest.mark.skipif(
    not (STORIES / "config.json").exists(), reason=f"{STORIES} is absent"
)

TEXT = (
    'Tom said, "I want to play with the ball." Lily said, "I want to play with the ball." '
    'Mom said, "'
)
SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "said": {"type": "string"}},
    "required": ["name", "said"],
}
CONSTRAINTS = {
    "regex": mg.Regex(r"[a-zA-Z ,.]+"),
    "json": mg.JsonSchema(SCHEMA),
    "choice": mg.Choice(["I want to play with the ball.", "I want to go home."]),
}
GREEDY_CONTROLS = ["plain", "bias", "repetition", "custom_processor", "logprobs", "all"]


@pytest.mark.parametrize("kind", ["lookup", "draft_model", "self"])
@pytest.mark.parametrize("constraint", list(CONSTRAINTS))
@pytest.mark.parametrize("control", GREEDY_CONTROLS)
def test_greedy_constrained_output_is_identical(story, noisy_draft, kind, constraint, control):  # noqa: F811
    ids = story.tokenizer.encode(TEXT)
    base = mg.GenerationSettings(
        max_tokens=40, temperature=0.0, constraint=CONSTRAINTS[constraint], **CONTROLS[control]
    )
    plain = list(mg.generate_tokens(story, ids, base))
    stats = SpeculationStats()
    spec_settings = replace(base, speculative=drafter(kind, story, noisy_draft))
    spec = list(speculative_generate_tokens(story, ids, spec_settings, stats=stats))
    assert_same_tokens(spec, plain)
    assert [t.constraint_complete for t in spec] == [t.constraint_complete for t in plain]
    assert stats.rounds > 0 and stats.accepted > 0
    if kind == "self":  # the target drafting for itself: only the grammar cuts drafts
        assert stats.accepted == stats.drafted


def test_drafts_the_grammar_forbids_are_never_verified(story):  # noqa: F811
    """The prompt is full of capitals; the grammar allows none: drafts are cut, output valid."""
    ids = story.tokenizer.encode(TEXT)
    settings = mg.GenerationSettings(
        max_tokens=30, temperature=0.0, constraint=mg.Regex(r"[a-z ]+"),
        speculative=mg.PromptLookup(num_draft=6, min_ngram=1, measure_cost=False),
    )  # fmt: skip
    stats = SpeculationStats()
    spec = list(speculative_generate_tokens(story, ids, settings, stats=stats))
    plain = list(mg.generate_tokens(story, ids, replace(settings, speculative=None)))
    assert [t.token for t in spec] == [t.token for t in plain]
    text = story.tokenizer.decode([t.token for t in spec])
    assert re.fullmatch(r"[a-z ]+", text), text
    assert stats.rounds > 0


def masked_probs(logits: np.ndarray, context: list[int], allowed: np.ndarray) -> np.ndarray:
    """numpy reference: repetition penalty → bias → grammar mask → temperature → top-k."""
    x = logits.astype(np.float64).copy()
    seen = np.unique(context)
    x[seen] = np.where(x[seen] > 0, x[seen] / PENALTY, x[seen] * PENALTY)
    for i, b in BIAS.items():
        x[i] += b
    x[~allowed] = -np.inf
    x = x / TEMPERATURE
    x[x < np.sort(x)[-TOP_K]] = -np.inf
    p = np.exp(x - x.max())
    return p / p.sum()


def allowed_ids(matcher: Matcher, vocab: int) -> np.ndarray:
    words = matcher.mask()[0].view(np.uint32)
    bits = (words[:, None] >> np.arange(32, dtype=np.uint32)) & 1
    return bits.reshape(-1)[:vocab].astype(bool)


def exact_constrained_joint(model, ids, constraint, *, masked: bool) -> dict:
    """``{(t0, t1): probability}`` of the first two tokens of constrained sampling."""
    plan = DecodePlan.build(model, mg.GenerationSettings(constraint=constraint))
    vocab = model.vocab_size

    def last_logits(seq):
        return np.array(model.model(mx.array(seq)[None])[0, -1].astype(mx.float32))

    def allowed_after(prefix):
        if not masked:
            return np.ones(vocab, dtype=bool)
        matcher = Matcher(plan.constraint)
        for t in prefix:
            matcher.consume(t)
        return allowed_ids(matcher, vocab)

    p0 = masked_probs(last_logits(ids), ids, allowed_after([]))
    joint = {}
    for t0 in np.flatnonzero(p0):
        seq = ids + [int(t0)]
        p1 = masked_probs(last_logits(seq), seq, allowed_after([int(t0)]))
        for t1 in np.flatnonzero(p1):
            joint[(int(t0), int(t1))] = p0[t0] * p1[t1]
    return joint


def test_constrained_speculative_sampling_matches_the_exact_distribution(story):  # noqa: F811
    ids = story.tokenizer.encode("Lily went to the park. Lily went to the")
    constraint = mg.Regex(r" [a-rt-z][a-z]*( [a-z]+)*")  # no " s...": a third of the mass
    settings = dict(
        max_tokens=2, temperature=TEMPERATURE, top_k=TOP_K, repetition_penalty=PENALTY,
        logit_bias=BIAS, ignore_eos=True, constraint=constraint,
        speculative=mg.PromptLookup(num_draft=3, measure_cost=False),
    )  # fmt: skip
    cache, stats, n, counts = mg.PromptCache(story.model), SpeculationStats(), 1500, {}
    for seed in range(n):
        run = speculative_generate_tokens(
            story, ids, mg.GenerationSettings(**settings, seed=seed), prompt_cache=cache,
            stats=stats,
        )  # fmt: skip
        pair = tuple(t.token for t in run)
        counts[pair] = counts.get(pair, 0) + 1
    assert stats.rounds == stats.drafted == n  # one (grammar-allowed) draft per run
    assert 0.05 * n < stats.accepted < 0.95 * n
    exact = exact_constrained_joint(story, ids, constraint, masked=True)
    assert set(counts) <= set(exact)  # never a token the grammar forbids
    assert pooled_z(counts, exact, n) < 3.09  # p > 1e-3
    unmasked = exact_constrained_joint(story, ids, constraint, masked=False)
    assert pooled_z(counts, unmasked, n) > 4.75  # the test tells the two apart


@pytest.mark.parametrize("kind", ["lookup", "draft_model"])
def test_nothing_allowed_ends_with_constraint_like_plain(story, noisy_draft, kind):  # noqa: F811
    choice = mg.Choice(["I want to play with the ball.", "I want to go home."])

    def ban_letters_after_three(logits, ctx):  # removes every id the grammar allows later
        return logits if ctx.step < 3 else mx.full(logits.shape, -mx.inf)

    ids = story.tokenizer.encode(TEXT)
    settings = mg.GenerationSettings(
        max_tokens=20, temperature=0.0, constraint=choice,
        logits_processors=[ban_letters_after_three],
    )  # fmt: skip
    plain = list(mg.generate_tokens(story, ids, settings))
    spec_settings = replace(settings, speculative=drafter(kind, story, noisy_draft))
    spec = list(speculative_generate_tokens(story, ids, spec_settings))
    assert [t.token for t in spec] == [t.token for t in plain]
    assert spec[-1].finish_reason == plain[-1].finish_reason == "constraint"
    assert spec[-1].finish_message == plain[-1].finish_message
    assert spec[-1].token == -1 and len(spec) == 4


def test_cli_constrained_speculation_prints_the_same_json(capsys):
    from mlx_gen.cli.main import main

    common = ["--model", str(STORIES), "--prompt", TEXT, "--max-tokens", "30", "--json"]
    common += ["--regex", "[a-zA-Z ,.]+"]
    docs = []
    for extra in ([], ["--prompt-lookup", "4"]):
        assert main(common + extra) == 0
        doc = json.loads(capsys.readouterr().out)
        docs.append((doc["text"], doc["token_ids"], doc["finish_reason"]))
    assert docs[0] == docs[1]
