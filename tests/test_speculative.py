"""Speculative decoding: greedy output identical under every control, KV trimming, errors.

The reference is always the non-speculative path (``generate_tokens`` / ``generate``)
with the same settings; every case also asserts that drafts were accepted (and, for the
noisy draft model, rejected), so that the speculative path really ran.
"""

from __future__ import annotations

from dataclasses import replace

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_map
from mlx_lm.models.cache import RotatingKVCache

import mlx_gen as mg
from mlx_gen.drafters import LookupDrafter
from mlx_gen.speculative import SpeculationStats, speculative_generate_tokens
from tests.conftest import STORIES

TEXT = (
    'Tom said, "I want to play with the ball." Lily said, "I want to play with the ball." '
    'Mom said, "'
)
BALL, PLAY, SHE, THE, LILY = 268, 337, 338, 265, 317

pytestmark = pytest.mark.skipif(
    not (STORIES / "config.json").exists(), reason=f"{STORIES} is absent"
)


@pytest.fixture(scope="module")
def story() -> mg.LoadedModel:
    return mg.load(STORIES)


@pytest.fixture(scope="module")
def noisy_draft() -> mg.LoadedModel:
    """stories260K with noise on every weight: it agrees with the target only sometimes."""
    draft = mg.load(STORIES)
    rng = np.random.default_rng(0)

    def perturb(w: mx.array) -> mx.array:
        noise = rng.standard_normal(w.shape).astype(np.float32)
        return w + 0.1 * mx.array(noise) * mx.std(w)

    draft.model.update(tree_map(perturb, draft.model.parameters()))
    mx.eval(draft.model.parameters())
    return draft


def step_aware(logits: mx.array, ctx: mg.ProcessorContext) -> mx.array:
    """A custom processor that reads ``ctx``: no immediate repeat; a push every third step."""
    assert ctx.step == ctx.generated_ids.shape[0]  # each position gets its own context
    if ctx.step > 0:
        last = mx.arange(logits.shape[-1]) == ctx.generated_ids[-1]
        logits = mx.where(last, -mx.inf, logits)
    return logits + (mx.arange(logits.shape[-1]) == BALL) * (2.0 if ctx.step % 3 == 0 else 0.0)


CONTROLS = {
    "plain": {},
    "bias": {"logit_bias": {BALL: 3.0, THE: -2.0, 999 % 512: 1.5}},
    "suppress": {"suppress_tokens": [SHE, PLAY]},
    "begin_suppress": {"begin_suppress_tokens": [452, 406], "begin_suppress_steps": 3},
    "min_new_tokens": {"min_new_tokens": 30, "ignore_eos": False, "extra_eos_token_ids": [281]},
    "repetition": {"repetition_penalty": 1.1},
    "presence": {"presence_penalty": 0.3},
    "frequency": {"frequency_penalty": 0.2},
    "bad_words": {"bad_words": ["ball", [452, 406]]},
    "no_repeat_ngram": {"no_repeat_ngram_size": 4},
    "sequence_bias": {"sequence_bias": {(452, 406): -5.0, (280,): 2.0}},
    "custom_processor": {"logits_processors": [step_aware]},
    "logprobs": {
        "logprobs": 4, "logprob_token_ids": [BALL, 3], "logprobs_modes": ("raw", "processed")
    },
    "all": {
        "logit_bias": {BALL: 2.0},
        "suppress_tokens": [SHE],
        "begin_suppress_tokens": [452],
        "min_new_tokens": 20,
        "extra_eos_token_ids": [281],
        "repetition_penalty": 1.05,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.05,
        "bad_words": ["park"],
        "logprobs": 3,
        "logprobs_modes": ("raw", "processed"),
        "ignore_eos": False,
    },
}  # fmt: skip


def drafter(kind: str, story: mg.LoadedModel, noisy: mg.LoadedModel):
    if kind == "lookup":
        return mg.PromptLookup(num_draft=4, max_ngram=3, min_ngram=1, measure_cost=False)
    if kind == "draft_model":
        return mg.DraftModel(noisy, num_draft=3, measure_cost=False)
    # The target itself: every draft accepted.
    return mg.DraftModel(story, num_draft=5, measure_cost=False)


def assert_same_tokens(spec: list[mg.GeneratedToken], base: list[mg.GeneratedToken]) -> None:
    assert [t.token for t in spec] == [t.token for t in base]
    assert [t.finish_reason for t in spec] == [t.finish_reason for t in base]
    assert [t.step for t in spec] == list(range(len(base)))
    for s, b in zip(spec, base, strict=True):
        assert s.logprobs.keys() == b.logprobs.keys()
        for mode in b.logprobs:
            x, y = s.logprobs[mode], b.logprobs[mode]
            assert x.token == y.token and x.rank == y.rank
            assert x.logprob == pytest.approx(y.logprob, abs=1e-4)
            assert [i for i, _ in x.top] == [i for i, _ in y.top]
            assert np.allclose([v for _, v in x.top], [v for _, v in y.top], atol=1e-4)
            assert np.allclose(
                list((x.extra or {}).values()), list((y.extra or {}).values()), atol=1e-4
            )


@pytest.mark.parametrize("kind", ["lookup", "draft_model"])
@pytest.mark.parametrize("control", list(CONTROLS))
def test_greedy_output_is_identical_under_every_control(story, noisy_draft, kind, control):
    ids = story.tokenizer.encode(TEXT)
    base_settings = mg.GenerationSettings(
        **{"max_tokens": 80, "ignore_eos": True, **CONTROLS[control]}
    )
    base = list(mg.generate_tokens(story, ids, base_settings))
    if control not in ("plain", "logprobs"):  # the control changes the output
        plain = mg.generate_tokens(
            story, ids, mg.GenerationSettings(max_tokens=80, ignore_eos=True)
        )
        assert [t.token for t in plain] != [t.token for t in base]
    stats = SpeculationStats()
    settings = replace(base_settings, speculative=drafter(kind, story, noisy_draft))
    spec = list(speculative_generate_tokens(story, ids, settings, stats=stats))
    assert_same_tokens(spec, base)
    assert stats.accepted > 0  # drafts really were accepted...
    if kind == "draft_model":
        assert stats.drafted > stats.accepted  # ...and some rejected


@pytest.mark.parametrize("kind", ["lookup", "draft_model"])
def test_stop_strings_end_speculative_output_at_the_same_place(story, noisy_draft, kind):
    ids = story.tokenizer.encode(TEXT)
    plain = mg.generate(story, ids, settings=mg.GenerationSettings(max_tokens=60))
    stop = plain.text[40:47]  # ends generation in the middle of a verified round
    settings = mg.GenerationSettings(max_tokens=60, stop=[stop], logprobs=2)
    base = mg.generate(story, ids, settings=settings)
    cache = mg.PromptCache(story.model)
    spec_settings = replace(settings, speculative=drafter(kind, story, noisy_draft))
    spec = mg.generate(story, ids, settings=spec_settings, prompt_cache=cache)
    assert base.finish_reason == "stop_string" and base.matched == stop
    assert (spec.text, spec.token_ids, spec.finish_reason) == (
        base.text,
        base.token_ids,
        base.finish_reason,
    )
    assert_cache_holds(cache, ids + spec.token_ids[:-1])


def test_full_acceptance_with_the_target_as_its_own_draft(story, noisy_draft):
    ids = story.tokenizer.encode(TEXT)
    settings = mg.GenerationSettings(max_tokens=40, ignore_eos=True, repetition_penalty=1.2)
    base = list(mg.generate_tokens(story, ids, settings))
    stats = SpeculationStats()
    spec_settings = replace(settings, speculative=drafter("self", story, noisy_draft))
    spec = list(speculative_generate_tokens(story, ids, spec_settings, stats=stats))
    assert_same_tokens(spec, base)
    assert stats.accepted == stats.drafted > 30  # and each round ends with a bonus token
    assert stats.rounds == 40 // 6 + 1


def assert_cache_holds(cache: mg.PromptCache, expected: list[int]) -> None:
    assert cache.token_ids == expected
    assert {layer.offset for layer in cache.layers} == {len(expected)}


@pytest.mark.parametrize("kind", ["lookup", "draft_model"])
def test_kv_cache_holds_prompt_plus_accepted_tokens_after_rejections(story, noisy_draft, kind):
    ids = story.tokenizer.encode(TEXT)
    cache, stats = mg.PromptCache(story.model), SpeculationStats()
    settings = mg.GenerationSettings(
        max_tokens=50, ignore_eos=True, speculative=drafter(kind, story, noisy_draft)
    )
    out = [
        t.token
        for t in speculative_generate_tokens(story, ids, settings, prompt_cache=cache, stats=stats)
    ]
    assert stats.drafted > stats.accepted > 0
    assert_cache_holds(cache, ids + out[:-1])
    # The cache is consistent: continuing from it gives what a fresh cache gives.
    more = ids + out + story.tokenizer.encode(" The end.", add_special_tokens=False)
    plain = mg.GenerationSettings(max_tokens=10, ignore_eos=True)
    reused = [t.token for t in mg.generate_tokens(story, more, plain, prompt_cache=cache)]
    assert reused == [t.token for t in mg.generate_tokens(story, more, plain)]


def test_closing_the_stream_mid_round_leaves_the_cache_consistent(story):
    ids = story.tokenizer.encode(TEXT)
    cache = mg.PromptCache(story.model)
    settings = mg.GenerationSettings(
        max_tokens=50,
        ignore_eos=True,
        speculative=mg.DraftModel(story, num_draft=6, measure_cost=False),
    )
    tokens = speculative_generate_tokens(story, ids, settings, prompt_cache=cache)
    got = [next(tokens).token for _ in range(3)]  # stops inside the first 7-token round
    tokens.close()
    assert_cache_holds(cache, ids + got[:-1])


def test_seeded_sampling_is_reproducible_and_uses_the_drafts(story, noisy_draft):
    ids = story.tokenizer.encode(TEXT)
    for spec in [
        mg.PromptLookup(num_draft=3, min_ngram=1, measure_cost=False),
        mg.DraftModel(noisy_draft, num_draft=3, measure_cost=False),
    ]:
        settings = mg.GenerationSettings(
            max_tokens=40, temperature=0.8, top_p=0.95, seed=7, ignore_eos=True, speculative=spec
        )
        stats = SpeculationStats()
        first = [t.token for t in speculative_generate_tokens(story, ids, settings, stats=stats)]
        second = [t.token for t in speculative_generate_tokens(story, ids, settings)]
        other = [
            t.token for t in speculative_generate_tokens(story, ids, replace(settings, seed=8))
        ]
        assert first == second and first != other
        assert stats.accepted > 0


def test_prompt_lookup_proposes_what_followed_the_latest_match():
    d = LookupDrafter(
        mg.PromptLookup(num_draft=4, max_ngram=3, min_ngram=1), [1, 2, 3, 9, 2, 3, 7, 8]
    )
    d.extend([2, 3])
    assert d.propose(4) == [7, 8, 2, 3]  # "2 3" last followed by 7 (latest occurrence)
    d.extend([9])
    assert d.propose(2) == [2, 3]  # the 3-gram "2 3 9" beats the 1-gram "9"
    d.extend([5])
    assert d.propose(4) == []  # 5 never occurred before


def test_errors_name_the_setting(story, tmp_path):
    ids = story.tokenizer.encode(TEXT)
    spec = mg.GenerationSettings(speculative=mg.PromptLookup())
    with pytest.raises(ValueError, match="speculative"):
        list(mg.generate_tokens(story, ids, spec))
    # Batches speculate now (a row drafts while alone): tests/test_batch_speculative.py.
    with pytest.raises(ValueError, match="speculative='lookup' is invalid"):
        mg.GenerationSettings(speculative="lookup")
    with pytest.raises(ValueError, match="num_draft=0 is invalid"):
        mg.PromptLookup(num_draft=0)
    with pytest.raises(ValueError, match="max_ngram=1 is invalid"):
        mg.PromptLookup(max_ngram=1, min_ngram=2)
    with pytest.raises(ValueError, match="model='str' is invalid"):
        mg.DraftModel("path/to/model")
    with pytest.raises(ValueError, match="cannot be trimmed"):
        rotating = mg.PromptCache(story.model)
        rotating.layers = [RotatingKVCache(max_size=32) for _ in rotating.layers]
        list(speculative_generate_tokens(story, ids, spec, prompt_cache=rotating))
    from tests.checkpoints import llama_config, write_checkpoint

    write_checkpoint(tmp_path / "small", llama_config())
    other = mg.load(tmp_path / "small")
    with pytest.raises(ValueError, match="vocabulary size 320; the target's is 512"):
        bad = mg.GenerationSettings(speculative=mg.DraftModel(other))
        list(speculative_generate_tokens(story, ids, bad))


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    from mlx_gen.cli.main import main

    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    "flags", [["--prompt-lookup", "4"], ["--draft-model", str(STORIES), "--num-draft", "3"]]
)
def test_cli_speculation_prints_the_same_text(capsys, flags):
    import json

    common = ["--model", str(STORIES), "--prompt", TEXT, "--max-tokens", "40"]
    common += ["--repetition-penalty", "1.05", "--stop", "will go", "--json"]
    docs = []
    for extra in ([], flags):
        code, out, err = run_cli(common + extra, capsys)
        assert code == 0, err
        doc = json.loads(out)
        docs.append((doc["text"], doc["token_ids"], doc["finish_reason"]))
    assert docs[0] == docs[1] and docs[0][2] == "stop_string"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--num-draft", "3"], "error: --num-draft needs --draft-model"),
        (["--prompt-lookup", "0"], "argument --prompt-lookup: '0' is not an int in 1..2147483647"),
        (["--prompt-lookup", "2", "--draft-model", "x"], "not allowed with argument"),
        (["--draft-model", "/nonexistent"], "error: argument --draft-model: model '/nonexistent'"),
        (
            ["--prompt-lookup", "2", "--score", " x"],
            "--prompt-lookup cannot be combined with --score",
        ),
    ],
)
def test_cli_speculation_errors(capsys, flags, message):
    code, _, err = run_cli(["--model", str(STORIES), "--prompt", "Lily"] + flags, capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_speculative_calls_check_ids_and_context_like_plain_ones(story):
    lookup = mg.PromptLookup(num_draft=4, measure_cost=False)
    s = mg.GenerationSettings(speculative=lookup, max_tokens=5)
    with pytest.raises(ValueError, match=r"prompt\[1\]=99999 .*size 512"):
        list(speculative_generate_tokens(story, [1, 99999], s))
    with pytest.raises(ValueError, match="600.*512"):
        mg.generate(story, [1] * 600, settings=s)
    plain = mg.generate(story, [1] * 508, settings=replace(s, speculative=None))
    spec = mg.generate(story, [1] * 508, settings=s)
    assert spec.token_ids == plain.token_ids and len(plain.token_ids) <= 4  # clamped to fit


@pytest.mark.parametrize("kind", ["lookup", "draft_model"])
def test_nothing_to_sample_ends_like_plain_decoding(story, noisy_draft, kind):
    spec = drafter("lookup" if kind == "lookup" else "draft_model", story, noisy_draft)

    # Every id banned from step 2 on by a processor; NaN logits from step 3 on.
    def ban_all_after_two(logits, ctx):
        return logits if ctx.step < 2 else mx.full(logits.shape, -mx.inf)

    def nan_after_three(logits, ctx):
        return logits if ctx.step < 3 else logits * mx.nan

    for proc in (ban_all_after_two, nan_after_three):
        s = mg.GenerationSettings(max_tokens=12, ignore_eos=True, logits_processors=[proc])
        plain = mg.generate(story, "Lily and Ben", settings=s)
        fast = mg.generate(story, "Lily and Ben", settings=replace(s, speculative=spec))
        assert plain.finish_reason == fast.finish_reason == "no_allowed_token"
        assert fast.token_ids == plain.token_ids and -1 not in fast.token_ids
