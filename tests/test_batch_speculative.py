"""Speculation in batches: a row drafts while it runs alone, and gives its plain output.

Every control of the control matrix (``tests/test_control_matrix.py``), with prompt
lookup and with a draft model, in a batch of two places where other rows (sampled,
constrained, penalised) run beside the speculating row, leave it alone, and join it
again mid-flight. Greedy cells must equal the single plain call token for token (and
logprobs within 1e-4); seeded sampling keeps its distribution (chi-square in
``test_speculative_sampling.py``), so here it must be a complete, reproducible run.
The row must really have drafted (its counters), and must not draft while it shares
the batch.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

import mlx_gen as mg
from mlx_gen.batch.decode import BatchDecoder
from mlx_gen.plan import DecodePlan
from tests.conftest import STORIES
from tests.test_control_matrix import (  # noqa: F401 (fixtures: story, single)
    CONTROLS,
    PROMPT,
    assert_same,
    settings,
    single,
    story,
)
from tests.test_speculative import noisy_draft  # noqa: F401 (fixture)

pytestmark = pytest.mark.skipif(
    not (STORIES / "config.json").exists(), reason=f"{STORIES} is absent"
)


def drafter(kind: str, draft_model: mg.LoadedModel) -> mg.PromptLookup | mg.DraftModel:
    if kind == "lookup":
        return mg.PromptLookup(num_draft=4, min_ngram=1, measure_cost=False)
    return mg.DraftModel(draft_model, num_draft=3, measure_cost=False)


def decode(model, prompts, plans, batch_size):
    """Run a BatchDecoder to the end: tokens per row and each row's counters."""
    decoder = BatchDecoder(model, prompts, plans, batch_size=batch_size)
    stats = [decoder.speculation(i) for i in range(len(prompts))]
    tokens: list[list] = [[] for _ in prompts]
    for events in decoder:
        for index, out in events:
            tokens[index].append(out)
    return tokens, stats


@pytest.mark.parametrize("kind", ["lookup", "draft_model"])
@pytest.mark.parametrize("control", list(CONTROLS))
def test_a_speculating_row_in_a_batch_equals_its_single_run(
    story,  # noqa: F811
    noisy_draft,  # noqa: F811
    single,  # noqa: F811
    kind,
    control,
):
    spec = replace(settings(control), speculative=drafter(kind, noisy_draft))
    others = [settings(c) for c in ("seeded_sampling", "constraint", "penalties")]
    short = [replace(s, max_tokens=m) for s, m in zip(others, (2, 3, 2), strict=True)]
    # The speculating row shares the batch, is joined twice, then runs alone.
    prompts = ["Lily went", PROMPT, "Once upon a time", "The dog"]
    per_prompt = [short[0], spec, short[1], short[2]]
    out = mg.generate_batch(story, prompts, per_prompt_settings=per_prompt, batch_size=2)
    ref = single[control]
    for i, s in ((0, short[0]), (2, short[1]), (3, short[2])):  # the others are untouched
        assert out[i].token_ids == mg.generate(story, prompts[i], settings=s).token_ids
    stats = out[1].stats.speculation
    # Penalised output repeats no n-gram of its context here: lookup has nothing to draft.
    drafts = not (kind == "lookup" and control == "penalties")
    assert stats is not None and (stats.rounds > 0) == drafts, stats  # it really drafted
    if control == "seeded_sampling":  # the same distribution, not the same draws
        assert len(out[1].token_ids) == len(ref.token_ids) and out[1].finish_reason == "length"
        again = mg.generate_batch(story, prompts, per_prompt_settings=per_prompt, batch_size=2)
        assert again[1].token_ids == out[1].token_ids  # a seed reproduces it (measure_cost off)
        return
    assert_same(out[1], ref)


def test_rows_draft_only_while_alone(story):  # noqa: F811
    lookup = mg.PromptLookup(num_draft=4, min_ngram=1, measure_cost=False)
    plan = DecodePlan.build(story, mg.GenerationSettings(max_tokens=20, speculative=lookup))
    ids = story.tokenizer.encode(PROMPT)
    # Two equal rows finish together: neither is ever alone, so neither drafts.
    tokens, stats = decode(story, [ids, ids], [plan, plan], batch_size=2)
    assert [s.rounds for s in stats] == [0, 0] and len(tokens[0]) == 20
    assert [t.token for t in tokens[0]] == [t.token for t in tokens[1]]
    # One place: each row runs alone, drafts, and gives the plain tokens.
    plain = mg.generate(story, ids, settings=mg.GenerationSettings(max_tokens=20))
    tokens, stats = decode(story, [ids, ids], [plan, plan], batch_size=1)
    assert all(s.rounds > 0 and s.accepted > 0 for s in stats), stats
    assert [[t.token for t in row] for row in tokens] == [plain.token_ids] * 2
    assert [t.step for t in tokens[0]] == list(range(20))


def test_a_sliding_window_model_is_refused_by_name(story, monkeypatch):  # noqa: F811
    from mlx_lm.models.cache import RotatingKVCache

    import mlx_gen.batch.speculate as speculate

    monkeypatch.setattr(speculate, "make_prompt_cache", lambda m: [RotatingKVCache(8)])
    lookup = mg.PromptLookup(num_draft=4)
    with pytest.raises(ValueError, match=r"prompts\[0\]: speculative=.*cannot be trimmed"):
        mg.generate_batch(story, [PROMPT], settings=mg.GenerationSettings(speculative=lookup))


def test_a_row_joining_a_drafting_row_ends_its_rounds_and_both_stay_exact(story):  # noqa: F811
    lookup = mg.PromptLookup(num_draft=4, min_ngram=1, measure_cost=False)
    greedy = mg.GenerationSettings(max_tokens=40, speculative=lookup)
    sampled = mg.GenerationSettings(max_tokens=12, temperature=0.9, seed=5)
    ids, other = story.tokenizer.encode(PROMPT), story.tokenizer.encode("Once upon a time")
    decoder = BatchDecoder(story, [ids], [DecodePlan.build(story, greedy)], batch_size=2)
    tokens: dict[int, list[int]] = {0: []}
    while not decoder.done:
        for index, out in decoder.step():
            tokens.setdefault(index, []).append(out.token)
        if len(tokens[0]) >= 10 and len(tokens) == 1:  # joins after rounds began
            assert decoder.speculation(0).rounds > 0
            rounds = decoder.speculation(0).rounds
            decoder.add(other, DecodePlan.build(story, sampled))
    assert decoder.speculation(0).rounds > rounds  # alone again after the other left
    alone = replace(greedy, speculative=None)
    assert tokens[0] == mg.generate(story, ids, settings=alone).token_ids
    assert tokens[1] == mg.generate(story, other, settings=sampled).token_ids


def test_a_drafting_row_stores_exactly_its_tokens_in_the_prefix_cache(story):  # noqa: F811
    lookup = mg.PromptLookup(num_draft=4, min_ngram=1, measure_cost=False)
    plan = DecodePlan.build(story, mg.GenerationSettings(max_tokens=24, speculative=lookup))
    ids = story.tokenizer.encode(PROMPT)
    cache = mg.PrefixCache(story, max_bytes=64 << 20)
    decoder = BatchDecoder(story, [ids], [plan], prefix_cache=cache)
    tokens = [out.token for events in decoder for _, out in events]
    assert decoder.speculation(0).rounds > 0
    plain = mg.generate(story, ids, settings=mg.GenerationSettings(max_tokens=24))
    assert tokens == plain.token_ids
    # The stored entry holds the prompt and every token but the last: a follow-up turn
    # that extends it hits all of it, and its output equals a cold run.
    follow = ids + tokens + story.tokenizer.encode(" Lily said", add_special_tokens=False)
    hit = cache.lookup(follow)
    assert hit.tokens == len(ids) + len(tokens) - 1
    warm = BatchDecoder(story, [follow], [plan], prefix_cache=cache)
    again = [out.token for events in warm for _, out in events]
    assert warm.cached_tokens[0] == len(ids) + len(tokens) - 1
    cold = mg.generate(story, follow, settings=mg.GenerationSettings(max_tokens=24))
    assert again == cold.token_ids


def test_the_cli_batch_mode_speculates_and_reports_it(story, tmp_path, capsys):  # noqa: F811
    from mlx_gen.cli.main import main

    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"{PROMPT}\nOnce upon a time\n")
    out = tmp_path / "out.jsonl"
    argv = ["--model", str(STORIES), "--prompt-file", str(prompts), "--batch-size", "1",
            "--prompt-lookup", "4", "--max-tokens", "24", "--temp", "0"]  # fmt: skip
    argv += ["--output", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    for row, prompt in zip(rows, [PROMPT, "Once upon a time"], strict=True):
        plain = mg.generate(story, prompt, settings=mg.GenerationSettings(max_tokens=24))
        assert row["token_ids"] == plain.token_ids
        spec = row["speculation"]
        assert spec["drafted"] >= spec["accepted"] >= 0 and spec["decision"], spec
