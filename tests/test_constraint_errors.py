"""llguidance errors never pass as a normal ending (issue 23, item 2).

When llguidance's matcher errors (an internal limit: a ``Choice`` of 2,000+ strings) its
mask allows only EOS; the run must end with ``finish_reason="constraint"`` and the
matcher's message, never ``"stop"`` with invalid text, on every path: single, stream,
batch, server and CLI. A grammar whose first mask already errors is refused when it is
compiled.
"""

from __future__ import annotations

import json

import httpx
import pytest

import mlx_gen as mg
import mlx_gen.server.settings_map as settings_map
from mlx_gen.cli.main import main
from tests.conftest import STORIES
from tests.serving import running_server

S = mg.GenerationSettings
WORDS = [f"w{i}x" for i in range(2500)]  # llguidance: "Current row has 2501 items; max is 2000"
MANY = mg.Choice(WORDS)
SELF_REF = {"$ref": "#"}


@pytest.fixture(scope="module")
def stories():
    if not (STORIES / "config.json").exists():
        pytest.skip(f"{STORIES} is absent")
    return mg.load(STORIES)


def assert_constraint_finish(text, finish_reason, message):
    assert finish_reason == "constraint"
    assert "llguidance" in message and "max is 2000" in message and "\n" not in message
    assert any(w.startswith(text) for w in WORDS)  # a valid prefix, never a wrong answer


def test_single_and_stream_end_with_constraint_and_the_matchers_message(stories):
    result = mg.generate(stories, "Once", settings=S(max_tokens=20, constraint=MANY))
    assert_constraint_finish(result.text, result.finish_reason, result.finish_message)
    assert result.constraint_complete is False
    chunks = list(mg.stream_generate(stories, "Once", settings=S(max_tokens=20, constraint=MANY)))
    text = "".join(c.text for c in chunks)
    assert_constraint_finish(text, chunks[-1].finish_reason, chunks[-1].finish_message)


def test_batch_rows_end_with_constraint_and_other_rows_are_unchanged(stories):
    rows = [S(max_tokens=20, constraint=MANY), S(max_tokens=8, temperature=0.9, seed=4),
            S(max_tokens=20, constraint=MANY, temperature=1.0, seed=2)]  # fmt: skip
    prompts = ["Once", "Tom", "Lily"]
    batch = mg.generate_batch(stories, prompts, per_prompt_settings=rows, batch_size=2)
    for result in (batch[0], batch[2]):
        assert_constraint_finish(result.text, result.finish_reason, result.finish_message)
    assert batch[1].token_ids == mg.generate(stories, "Tom", settings=rows[1]).token_ids


@pytest.mark.parametrize("drafter", ["lookup", "draft_model"])
def test_speculative_runs_end_with_constraint_single_and_batched(stories, drafter):
    spec = mg.PromptLookup(num_draft=4, min_ngram=1, measure_cost=False)
    if drafter == "draft_model":
        spec = mg.DraftModel(stories, num_draft=3, measure_cost=False)
    settings = S(max_tokens=20, constraint=MANY, speculative=spec)
    result = mg.generate(stories, "Once w1x w2x", settings=settings)
    assert_constraint_finish(result.text, result.finish_reason, result.finish_message)
    (row,) = mg.generate_batch(stories, ["Once w1x w2x"], settings=settings)
    assert_constraint_finish(row.text, row.finish_reason, row.finish_message)


def test_a_grammar_whose_first_mask_errors_is_refused_when_compiled(stories):
    with pytest.raises(ValueError, match=r"JsonSchema\(.*cannot be used: llguidance fails on"):
        mg.generate(stories, "Once", settings=S(constraint=mg.JsonSchema(SELF_REF)))
    with pytest.raises(ValueError, match=r"prompts\[1\]: JsonSchema"):
        rows = [S(), S(constraint=mg.JsonSchema(SELF_REF))]
        mg.generate_batch(stories, ["a", "b"], per_prompt_settings=rows)


def test_server_says_constraint_not_stop_and_refuses_a_self_referencing_schema(
    stories, monkeypatch
):
    real = settings_map.constraint_for

    def many_for_json_object(fmt):  # the server's JSON schemas don't reach the limit
        return MANY if fmt is not None and fmt.type == "json_object" else real(fmt)

    monkeypatch.setattr(settings_map, "constraint_for", many_for_json_object)
    body = {"model": "test", "prompt": "Once", "max_tokens": 20,
            "response_format": {"type": "json_object"}}  # fmt: skip
    with running_server(stories) as url:
        choice = httpx.post(url + "/v1/completions", json=body, timeout=60).json()["choices"][0]
        assert_constraint_finish(choice["text"], choice["finish_reason"], choice["stop_reason"])
        with httpx.stream("POST", url + "/v1/completions", json=body | {"stream": True}) as r:
            events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
        last = events[-1]["choices"][0]
        text = "".join(e["choices"][0]["text"] for e in events)
        assert_constraint_finish(text, last["finish_reason"], last["stop_reason"])
        schema = {"type": "json_schema", "json_schema": {"name": "t", "schema": SELF_REF}}
        r = httpx.post(url + "/v1/completions", json=body | {"response_format": schema})
        assert r.status_code == 400 and "llguidance fails on its first token" in r.text


def test_cli_prints_one_line_naming_the_failure(capsys, stories):
    args = ["--model", str(STORIES), "--prompt", "Once", "--max-tokens", "20", "--json"]
    code = main([*args, *(a for w in WORDS for a in ("--choice", w))])
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert_constraint_finish(doc["text"], doc["finish_reason"], doc["finish_message"])
    assert code == 0 and err.count("\n") == 1
    assert err.startswith("constraint: generation ended: the constraint failed in llguidance")
    code = main([*args, "--json-schema", json.dumps(SELF_REF)])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.count("\n") == 1 and "first token" in err
