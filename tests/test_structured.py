"""Structured output end to end: valid outputs, exact logprobs, EOS sets, other controls."""

from __future__ import annotations

import json
import os
import re
import shutil

import jsonschema
import llguidance
import numpy as np
import pytest

import mlx_gen as mg
from mlx_gen.constraints.compiled import TokenTable, build_token_table
from tests.checkpoints import llama_config, write_checkpoint

S = mg.GenerationSettings
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "address": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 10},
                "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
            },
            "required": ["city", "zip"],
            "additionalProperties": False,
        },
        "role": {"enum": ["admin", "user", "guest"]},
        "nickname": {"type": "string", "maxLength": 8},
    },
    "required": ["name", "age", "address", "role"],
    "additionalProperties": False,
}
LISTS = {
    "type": "object",
    "properties": {
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "minItems": 2,
                 "maxItems": 4},
        "scores": {"type": "array", "items": {"type": "integer", "minimum": -5, "maximum": 5},
                   "minItems": 1, "maxItems": 3},
        "ok": {"type": "boolean"},
    },
    "required": ["tags", "scores"],
    "additionalProperties": False,
}  # fmt: skip
SMALL = {
    "type": "object",
    "properties": {
        "answer": {"enum": ["yes", "no"]},
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
        "note": {"type": "string", "maxLength": 6},
    },
    "required": ["answer", "score"],
    "additionalProperties": False,
}
# The full acceptance count on SmolLM2 (50) is opt-in: its 4-bit CPU decode costs ~0.1-0.5 s
# per token per row here, and batching does not amortise it (see BENCHMARKS.md).
SMOLLM2_RUNS = int(os.environ.get("MLX_GEN_SMOLLM2_STRUCTURED_RUNS", "2"))


@pytest.fixture(scope="module")
def stories():
    from tests.conftest import STORIES

    if not (STORIES / "config.json").exists():
        pytest.skip(f"{STORIES} is absent")
    return mg.load(STORIES)


@pytest.fixture(scope="module")
def three_eos(tmp_path_factory):
    """A tiny Llama whose config lists three EOS ids and whose vocabulary (320) exceeds
    its tokenizer's (271 ids)."""
    folder = tmp_path_factory.mktemp("eos3") / "llama"
    write_checkpoint(folder, llama_config(eos_token_id=[0, 2, 3]))
    return mg.load(folder)


def _allowed_replay(model, constraint, eos, tokens):
    """Independent replay: the ids llguidance allows before each of ``tokens``."""
    table = build_token_table(model.tokenizer, vocab_size=model.vocab_size, eos_token_ids=eos)
    matcher = llguidance.LLMatcher(table, constraint.grammar)
    out = []
    for token in tokens:
        words = np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8)
        out.append(set(np.flatnonzero(np.unpackbits(words, bitorder="little")).tolist()))
        matcher.consume_token(token)
    return out


@pytest.mark.parametrize("schema", [PERSON, LISTS, SMALL], ids=["nested", "arrays", "enum"])
def test_stories_json_valid_in_50_seeded_runs(stories, schema):
    rows = [S(constraint=mg.JsonSchema(schema), temperature=1.0, seed=i, max_tokens=200)
            for i in range(50)]  # fmt: skip
    results = mg.generate_batch(stories, ["Once upon a time"] * 50, per_prompt_settings=rows)
    for result in results:
        assert (result.finish_reason, result.constraint_complete) == ("stop", True), result.text
        jsonschema.validate(json.loads(result.text), schema)
    assert len({r.text for r in results}) > 40  # sampled, not one forced answer
    for i in (0, 7):  # each row is its single run
        single = mg.generate(stories, "Once upon a time", settings=rows[i])
        assert (single.token_ids, single.text) == (results[i].token_ids, results[i].text)


@pytest.mark.parametrize(
    "pattern",
    [r"[A-Z][a-z]{1,6}( [a-z]{1,6}){1,3}\.", r"(19|20)[0-9]{2}-[01][0-9]", r" [a-z]{1,8}"],
)
def test_regex_output_fullmatches(stories, pattern):
    rows = [S(constraint=mg.Regex(pattern), temperature=1.0, seed=i, max_tokens=40)
            for i in range(10)]  # fmt: skip
    for result in mg.generate_batch(stories, ["Once upon a time"] * 10, per_prompt_settings=rows):
        assert result.finish_reason == "stop"
        assert re.fullmatch(pattern, result.text), result.text


def test_choice_returns_one_of_the_choices(stories):
    choices = ["happy dog", "sad cat", "a", 'quote " and \\ slash', "x\ny"]
    rows = [S(constraint=mg.Choice(choices), temperature=1.0, seed=i, max_tokens=20)
            for i in range(20)]  # fmt: skip
    texts = {r.text for r in mg.generate_batch(stories, ["Once"] * 20, per_prompt_settings=rows)}
    assert texts <= set(choices) and len(texts) > 1
    spaced = mg.generate(stories, "Once", settings=S(constraint=mg.Choice([" one", "two"])))
    assert spaced.text in (" one", "two")


def test_leading_space_is_kept_for_a_sentencepiece_tokenizer(stories):
    # stories260K's decoder drops a first token's leading space: " a" must survive.
    for pattern, text in [(" a", " a"), ("a", "a"), (" x a", " x a")]:
        result = mg.generate(stories, "Once", settings=S(constraint=mg.Regex(pattern)))
        assert result.text == text and result.finish_reason == "stop"
        streamed = mg.stream_generate(stories, "Once", settings=S(constraint=mg.Regex(pattern)))
        assert "".join(c.text for c in streamed) == text


def test_sentencepiece_only_folder_builds_its_table_from_pieces(stories, tmp_path):
    from tests.conftest import STORIES

    folder = tmp_path / "spm"
    shutil.copytree(STORIES, folder, ignore=shutil.ignore_patterns("tokenizer.json"))
    model = mg.load(folder)
    assert not hasattr(model.tokenizer._tokenizer, "backend_tokenizer")
    assert (
        TokenTable(model.tokenizer._tokenizer).tokens
        == TokenTable(stories.tokenizer._tokenizer).tokens
    )
    result = mg.generate(model, "Once", settings=S(constraint=mg.Regex(" a b")))
    assert result.text == " a b"


def test_processed_logprobs_are_the_sampled_distribution_and_raw_equal_score(stories):
    constraint = mg.JsonSchema(SMALL)
    settings = S(constraint=constraint, temperature=1.0, seed=3, max_tokens=60, top_k=0,
                 logprobs=stories.vocab_size, logprobs_modes=("raw", "processed"))  # fmt: skip
    result = mg.generate(stories, "Once upon a time", settings=settings)
    assert result.finish_reason == "stop"
    allowed = _allowed_replay(stories, constraint, [2], result.token_ids)
    for token, report, ids in zip(result.token_ids, result.logprobs, allowed, strict=True):
        processed = report["processed"]
        finite = {i: v for i, v in processed.top if np.isfinite(v)}
        assert np.isfinite(processed.logprob) and set(finite) == ids and token in ids
        assert abs(np.exp(np.array(list(finite.values()), dtype=np.float64)).sum() - 1) < 1e-4
    scored = mg.score(stories, "Once upon a time", result.token_ids)
    np.testing.assert_allclose(
        [r["raw"].logprob for r in result.logprobs], [r.logprob for r in scored.logprobs], atol=1e-4
    )


def test_every_eos_id_stops_at_an_accepting_state(three_eos):
    assert three_eos.generation_config.eos_token_ids == (0, 2, 3)
    assert three_eos.vocab_size == 320 > len(three_eos.tokenizer._tokenizer)
    for eos in (0, 2, 3):
        # A large bias on one EOS id (and on an id beyond the tokenizer): the mask still wins.
        settings = S(constraint=mg.Regex("ab"), logit_bias={eos: 30.0, 300: 1e9},
                     logprobs=320, logprobs_modes=("processed",))  # fmt: skip
        result = mg.generate(three_eos, "hello", settings=settings)
        assert (result.text, result.finish_reason, result.matched) == ("ab", "stop", eos)
        last = {i for i, v in result.logprobs[-1]["processed"].top if np.isfinite(v)}
        assert {0, 2, 3} <= last  # every EOS id is allowed once "ab" is complete
        for report in result.logprobs:
            finite = [i for i, v in report["processed"].top if np.isfinite(v)]
            assert max(finite) < 271  # ids beyond the tokenizer are never allowed


def _digit_ids(model):
    table = TokenTable(model.tokenizer._tokenizer)
    return [i for i, b in enumerate(table.tokens) if any(chr(c).isdigit() for c in b)]


def test_a_ban_on_every_digit_ends_with_finish_reason_constraint(stories):
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    settings = S(constraint=mg.JsonSchema(schema, whitespace=None), temperature=1.0, seed=1,
                 suppress_tokens=_digit_ids(stories), max_tokens=50)  # fmt: skip
    result = mg.generate(stories, "Once", settings=settings)
    assert result.finish_reason == "constraint" and result.constraint_complete is False
    assert "other controls" in result.finish_message
    assert result.text in ('{"n":', '{"n":-') and -1 not in result.token_ids
    streamed = list(mg.stream_generate(stories, "Once", settings=settings))
    assert streamed[-1].token == -1 and streamed[-1].finish_reason == "constraint"


def test_max_tokens_before_the_grammar_completes_is_length_and_incomplete(stories):
    result = mg.generate(
        stories, "Once", settings=S(constraint=mg.JsonSchema(PERSON), max_tokens=4)
    )
    assert (result.finish_reason, result.constraint_complete) == ("length", False)
    assert len(result.token_ids) == 4


def test_min_new_tokens_ignore_eos_and_stop_strings_still_apply(stories):
    yes = mg.Choice(["yes"])
    held = mg.generate(stories, "Once", settings=S(constraint=yes, min_new_tokens=5))
    assert (held.text, held.finish_reason, held.constraint_complete) == ("yes", "constraint", True)
    free = mg.generate(stories, "Once", settings=S(constraint=yes, ignore_eos=True))
    assert free.finish_reason == "constraint" and "ignore_eos" in free.finish_message
    stopped = mg.generate(stories, "Once", settings=S(constraint=mg.Regex("abcabc"), stop=["ca"]))
    assert (stopped.text, stopped.finish_reason) == ("ab", "stop_string")
    banned = mg.generate(stories, "Once", settings=S(constraint=mg.Choice(["cat", "dog"]),
                                                    bad_words=["cat"]))  # fmt: skip
    assert banned.text == "dog"


def test_batch_rows_with_and_without_constraints_equal_single_runs(stories):
    rows = [
        S(constraint=mg.JsonSchema(LISTS), temperature=1.0, seed=1, max_tokens=120, logprobs=3,
          logprobs_modes=("raw", "processed")),
        S(temperature=1.0, seed=2, max_tokens=30, logprobs=3),
        S(constraint=mg.Regex("[a-z]+"), suppress_tokens=list(range(3, 512)), max_tokens=5),
        S(constraint=mg.Choice(["yes", "no"]), temperature=1.0, seed=4),
        S(max_tokens=12),
    ]  # fmt: skip
    batch = mg.generate_batch(stories, ["Once upon a time"] * 5, per_prompt_settings=rows)
    for result, settings in zip(batch, rows, strict=True):
        single = mg.generate(stories, "Once upon a time", settings=settings)
        assert (result.token_ids, result.text, result.finish_reason) == (
            single.token_ids, single.text, single.finish_reason)  # fmt: skip
        assert result.constraint_complete == single.constraint_complete
        for got, want in zip(result.logprobs, single.logprobs, strict=True):
            for mode in want:
                assert abs(got[mode].logprob - want[mode].logprob) < 1e-4
    assert batch[2].finish_reason == "constraint" and batch[2].token_ids == []


@pytest.fixture(scope="module")
def smollm2():
    from mlx_gen.loading.default_model import default_model_path

    try:
        default_model_path()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    return mg.load()


def test_smollm2_json_schema_outputs_validate(smollm2):
    messages = [{"role": "user", "content": "Is the sky blue? Answer in JSON."}]
    rows = [S(constraint=mg.JsonSchema(SMALL), temperature=1.0, seed=i, max_tokens=40)
            for i in range(SMOLLM2_RUNS)]  # fmt: skip
    results = mg.generate_batch(smollm2, [messages] * SMOLLM2_RUNS, per_prompt_settings=rows)
    for result in results:
        assert (result.finish_reason, result.constraint_complete) == ("stop", True), result.text
        assert result.matched in smollm2.generation_config.eos_token_ids
        jsonschema.validate(json.loads(result.text), SMALL)


def test_a_prompt_cache_stays_true_after_a_constraint_finish(stories):
    cache = mg.PromptCache(stories.model)
    settings = S(constraint=mg.Regex("[0-9]"), suppress_tokens=_digit_ids(stories))
    ended = mg.generate(stories, "Once upon a time", settings=settings, prompt_cache=cache)
    assert ended.finish_reason == "constraint"
    assert len(cache.token_ids) == cache.layers[0].offset  # every KV position is accounted for
    again = mg.generate(stories, "Once upon a time", settings=S(max_tokens=8), prompt_cache=cache)
    fresh = mg.generate(stories, "Once upon a time", settings=S(max_tokens=8))
    assert again.token_ids == fresh.token_ids


def test_smollm2_choice_and_regex_with_exact_logprobs(smollm2):
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    choices = ["Paris", "London", "The capital is Rome"]
    settings = S(constraint=mg.Choice(choices), temperature=1.0, seed=0, logprobs=1000,
                 logprobs_modes=("raw", "processed"))  # fmt: skip
    result = mg.generate(smollm2, messages=messages, settings=settings)
    assert result.text in choices and result.finish_reason == "stop"
    eos = list(smollm2.generation_config.eos_token_ids)
    prompt = smollm2.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    allowed = _allowed_replay(smollm2, mg.Choice(choices), eos, result.token_ids)
    for report, ids in zip(result.logprobs, allowed, strict=True):
        finite = {i: v for i, v in report["processed"].top if np.isfinite(v)}
        assert set(finite) == ids  # every allowed id (fewer than 1000) and nothing else
        assert abs(np.exp(np.array(list(finite.values()), dtype=np.float64)).sum() - 1) < 1e-4
    scored = mg.score(smollm2, prompt, result.token_ids)
    np.testing.assert_allclose(
        [r["raw"].logprob for r in result.logprobs], [r.logprob for r in scored.logprobs],
        atol=1e-4,
    )  # fmt: skip
    year = mg.generate(smollm2, messages=[{"role": "user", "content": "When did WW2 end?"}],
                       settings=S(constraint=mg.Regex(r"[12][0-9]{3}")))  # fmt: skip
    assert re.fullmatch(r"[12][0-9]{3}", year.text) and year.finish_reason == "stop"
