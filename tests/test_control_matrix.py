"""Every control on every path: each cell equals the single plain run, or is refused by name.

Paths: batched (the row decoded beside rows with other settings, joining mid-flight),
prompt lookup, draft model, the server (``/v1/completions`` through HTTP) — the 2-rank
path runs the same controls in ``tests/distributed_worker.py`` (``test_distributed.py``
compares every run there with one process). Controls: logit bias, suppression,
begin-suppression, ``min_new_tokens``, stop strings, penalties, a custom processor, a
JSON-schema constraint, raw + processed logprobs, and seeded sampling.

What each path promises, and what is checked here:

* greedy cells: the same tokens, finish reason and logprobs (within 1e-4) on every path;
* seeded sampling: the batched path and the server give the same tokens as the single run;
  speculative paths promise the same *distribution* only (chi-square tests in
  ``test_speculative_sampling.py`` and ``test_speculative_constrained.py``), so here they
  must give a valid run of the same length and finish;
* a custom processor cannot travel over HTTP: the server refuses the field by name
  (``--strict``) — the one refused cell;
* the server runs every cell plain and with its ``speculative`` field (prompt lookup and
  a draft model, drafting while the request decodes alone); speculation inside batches
  is covered in ``test_batch_speculative.py``.
"""

from __future__ import annotations

from dataclasses import replace

import httpx
import numpy as np
import pytest

import mlx_gen as mg
from mlx_gen.server.speculation import ServerSpeculation
from tests.conftest import STORIES
from tests.serving import running_server
from tests.test_speculative import (
    noisy_draft,  # noqa: F401 (fixture)
    step_aware,
)

pytestmark = pytest.mark.skipif(
    not (STORIES / "config.json").exists(), reason=f"{STORIES} is absent"
)

PROMPT = 'Tom said, "I want to play with the ball." Lily said, "I want to'
BALL, THE, SHE, EOS = 268, 265, 338, 2
SCHEMA = {
    "type": "object",
    "properties": {"said": {"type": "string", "maxLength": 40}},
    "required": ["said"],
}


CONTROLS: dict[str, dict] = {
    "bias": {"logit_bias": {BALL: 3.0, THE: -float("inf")}},
    "suppression": {"suppress_tokens": [SHE, 337]},
    "begin_suppression": {"begin_suppress_tokens": [337, 452]},
    "min_new_tokens": {"min_new_tokens": 12, "logit_bias": {EOS: 30.0}},
    "stop_string": {"stop": ["help"]},
    "penalties": {"repetition_penalty": 1.3, "presence_penalty": 0.4, "frequency_penalty": 0.3},
    "custom_processor": {"logits_processors": [step_aware]},
    "constraint": {"constraint": mg.JsonSchema(SCHEMA)},
    "logprobs": {"logprobs": 3, "logprobs_modes": ("raw", "processed")},
    "seeded_sampling": {"temperature": 0.9, "top_p": 0.9, "seed": 7},
}
BASE = {"max_tokens": 24, "temperature": 0.0}


def settings(control: str) -> mg.GenerationSettings:
    return mg.GenerationSettings(**{**BASE, **CONTROLS[control]})


@pytest.fixture(scope="module")
def story() -> mg.LoadedModel:
    return mg.load(STORIES)


@pytest.fixture(scope="module")
def single(story) -> dict[str, mg.GenerationResult]:
    """The reference: one plain call per control."""
    return {c: mg.generate(story, PROMPT, settings=settings(c)) for c in CONTROLS}


def assert_same(result: mg.GenerationResult, ref: mg.GenerationResult) -> None:
    assert result.token_ids == ref.token_ids
    assert result.finish_reason == ref.finish_reason and result.text == ref.text
    for got, want in zip(result.logprobs, ref.logprobs, strict=True):
        assert got.keys() == want.keys()
        for mode in want:
            assert got[mode].logprob == pytest.approx(want[mode].logprob, abs=1e-4)
            assert [i for i, _ in got[mode].top] == [i for i, _ in want[mode].top]


def test_the_controls_change_the_output(single):
    """Each control really acts here (else its cells would prove nothing)."""
    plain = mg.generate(mg.load(STORIES), PROMPT, settings=mg.GenerationSettings(**BASE))
    for control, result in single.items():
        if control != "logprobs":
            assert result.token_ids != plain.token_ids or result.finish_reason != "length", control


@pytest.mark.parametrize("control", list(CONTROLS))
def test_batched_rows_equal_single_runs(story, single, control):
    others = [settings(c) for c in ("seeded_sampling", "constraint", "penalties")]
    prompts = ["Lily went", PROMPT, "Once upon a time", "The dog"]
    per_prompt = [others[0], settings(control), others[1], others[2]]
    out = mg.generate_batch(story, prompts, per_prompt_settings=per_prompt, batch_size=2)
    assert_same(out[1], single[control])


@pytest.mark.parametrize("kind", ["lookup", "draft_model"])
@pytest.mark.parametrize("control", list(CONTROLS))
def test_speculative_paths(story, noisy_draft, single, kind, control):  # noqa: F811
    spec = (
        mg.PromptLookup(num_draft=4, min_ngram=1, measure_cost=False)
        if kind == "lookup"
        else mg.DraftModel(noisy_draft, num_draft=3, measure_cost=False)
    )
    stats = mg.SpeculationStats()
    ids = story.tokenizer.encode(PROMPT)
    tokens = list(
        mg.speculative_generate_tokens(
            story, ids, replace(settings(control), speculative=spec), stats=stats
        )
    )
    assert stats.rounds > 0  # the speculative path really ran
    ref = single[control]
    if control == "seeded_sampling":  # the same distribution, not the same draws
        assert len(tokens) == len(ref.token_ids) and tokens[-1].finish_reason == "length"
        return
    if control == "stop_string":  # stop strings act on text, one layer up
        result = mg.generate(story, PROMPT, settings=replace(settings(control), speculative=spec))
        assert_same(result, ref)
        return
    assert [t.token for t in tokens] == ref.token_ids
    assert tokens[-1].finish_reason == ref.finish_reason
    for got, want in zip(tokens, ref.logprobs, strict=True):
        for mode in want:
            assert got.logprobs[mode].logprob == pytest.approx(want[mode].logprob, abs=1e-4)


def server_body(control: str) -> dict:
    """``/v1/completions`` fields for a control (OpenAI names, mlx_gen extensions)."""
    c = CONTROLS[control]
    body = {"model": "story", "prompt": PROMPT, "max_tokens": 24, "temperature": 0.0,
            "return_token_ids": True}  # fmt: skip
    if "logit_bias" in c:
        bias = c["logit_bias"].items()
        body["logit_bias"] = {str(k): max(-100.0, min(100.0, v)) for k, v in bias}
    names = ("suppress_tokens", "begin_suppress_tokens", "stop", "repetition_penalty",
             "presence_penalty", "frequency_penalty", "temperature", "top_p", "seed")  # fmt: skip
    for name in names:
        if name in c:
            body[name] = list(c[name]) if isinstance(c[name], list) else c[name]
    if "min_new_tokens" in c:
        body["min_tokens"] = c["min_new_tokens"]
    if "constraint" in c:
        body["response_format"] = {"type": "json_schema",
                                   "json_schema": {"name": "said", "schema": SCHEMA}}  # fmt: skip
    if "logprobs" in c:
        body["logprobs"] = c["logprobs"]
    return body


@pytest.fixture(scope="module")
def server(story, noisy_draft):  # noqa: F811
    speculation = ServerSpeculation(draft_model=noisy_draft, measure_cost=False)
    with running_server(story, name="story", strict=True, speculation=speculation) as url:
        yield url


@pytest.mark.parametrize(
    "speculative", [False, {"prompt_lookup": 4}, {"draft": 3}], ids=["plain", "lookup", "draft"]
)
@pytest.mark.parametrize("control", [c for c in CONTROLS if c != "custom_processor"])
def test_server_equals_single_runs(server, single, control, speculative):
    body = {**server_body(control), "speculative": speculative}
    reply = httpx.post(server + "/v1/completions", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    choice = reply.json()["choices"][0]
    ref = single[control]
    if speculative and control == "seeded_sampling":  # the same distribution, not draws
        assert len(choice["token_ids"]) == len(ref.token_ids)
        assert choice["finish_reason"] == "length"
        return
    # A bias of -inf travels as -100 (OpenAI's clamp): the same ban in effect here.
    assert choice["token_ids"] == ref.token_ids
    assert choice["text"] == ref.text
    expected_finish = "stop" if ref.finish_reason == "stop_string" else ref.finish_reason
    assert choice["finish_reason"] == expected_finish
    if "logprobs" in CONTROLS[control]:
        raw = [step["raw"].logprob for step in ref.logprobs]
        np.testing.assert_allclose(choice["logprobs"]["token_logprobs"], raw, atol=1e-4)


def test_server_refuses_a_custom_processor_by_name(server):
    body = {"model": "story", "prompt": PROMPT, "logits_processors": ["step_aware"]}
    reply = httpx.post(server + "/v1/completions", json=body, timeout=60)
    assert reply.status_code == 400 and "logits_processors" in reply.text
