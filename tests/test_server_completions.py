"""/v1/completions on stories260K through the openai client: prompt forms, echo, logprobs."""

from __future__ import annotations

import numpy as np
import openai
import pytest

import mlx_gen as mg
from tests.conftest import STORIES
from tests.serving import running_server

S = mg.GenerationSettings


@pytest.fixture(scope="module")
def model():
    if not (STORIES / "config.json").exists():
        pytest.skip(f"{STORIES} is absent")
    return mg.load(STORIES)


@pytest.fixture(scope="module")
def client(model):
    with running_server(model, name="stories", max_batch_size=4) as base:
        yield openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)


def test_every_prompt_form_equals_generate(model, client):
    tok = model.tokenizer
    texts = ["Once upon a time", "Lily and Tom"]
    ids = [tok.encode(t) for t in texts]
    refs = [mg.generate(model, t, settings=S(max_tokens=8, temperature=0.9, seed=3)) for t in texts]
    for prompt in (texts[0], texts, ids[0], ids):
        r = client.completions.create(
            model="stories", prompt=prompt, max_tokens=8, temperature=0.9, seed=3
        )
        count = 1 if prompt in (texts[0], ids[0]) else 2
        assert [c.text for c in r.choices] == [x.text for x in refs[:count]]
        assert [c.index for c in r.choices] == list(range(count))
        assert r.usage.prompt_tokens == sum(len(i) for i in ids[:count])


def test_echo_logprobs_are_teacher_forced_and_self_consistent(model, client):
    prompt = "Once upon a time, there was a little girl named Lily"
    ids = model.tokenizer.encode(prompt)
    r = client.completions.create(
        model="stories", prompt=prompt, max_tokens=3, echo=True, logprobs=2
    )
    choice = r.choices[0]
    ref = mg.generate(model, prompt, settings=S(max_tokens=3, logprobs=2))
    assert choice.text == prompt + ref.text
    lp = choice.logprobs
    n = len(ids)
    assert len(lp.token_logprobs) == n + 3 and lp.token_logprobs[0] is None
    assert lp.top_logprobs[0] is None
    scored = mg.score(model, ids[:1], ids[1:], top_n=2)
    np.testing.assert_allclose(
        lp.token_logprobs[1:n], [s.logprob for s in scored.logprobs], atol=1e-5
    )
    np.testing.assert_allclose(
        lp.token_logprobs[n:], [x["raw"].logprob for x in ref.logprobs], atol=1e-4
    )
    for value, top, report in zip(
        lp.token_logprobs[1:n], lp.top_logprobs[1:n], scored.logprobs, strict=True
    ):
        # Harnesses test greediness with exact float equality: same numbers, same floats.
        assert (value == max(top.values())) == (report.rank == 1)
        assert value in top.values()
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)


def test_scoring_only_request_and_stream_equals_whole(model, client):
    ids = model.tokenizer.encode("The dog ran")
    r = client.completions.create(model="stories", prompt=ids, max_tokens=0, echo=True, logprobs=0)
    assert r.choices[0].finish_reason == "length"
    assert len(r.choices[0].logprobs.token_logprobs) == len(ids)
    whole = client.completions.create(
        model="stories", prompt="The dog", max_tokens=10, logprobs=1, stop=["."]
    )
    chunks = list(
        client.completions.create(
            model="stories", prompt="The dog", max_tokens=10, logprobs=1, stop=["."], stream=True
        )
    )
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    streamed = [v for c in chunks for v in (c.choices[0].logprobs.token_logprobs or [])]
    assert streamed == whole.choices[0].logprobs.token_logprobs
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason


@pytest.mark.parametrize(
    ("prompt", "extra", "param"),
    [
        ([1, 9999], {}, "prompt"),
        ([], {}, "prompt"),
        ("x", {"logprobs": 21}, "logprobs"),
        ("x", {"best_of": 3}, "best_of"),
        ("x", {"suffix": "y"}, "suffix"),
        ("x " * 600, {}, "prompt"),
    ],
)
def test_bad_completions_are_400(client, prompt, extra, param):
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="stories", prompt=prompt, max_tokens=2, **extra)
    assert err.value.body["param"] == param
