"""The OpenAI-compatible server, through the official ``openai`` client.

Every answer is checked against ``mlx_gen.generate`` with the same settings and seed
(the server's continuous batching must not change anything), on a tiny random Llama
with a chat template.
"""

from __future__ import annotations

import dataclasses
import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import jsonschema
import numpy as np
import openai
import pytest

import mlx_gen as mg
from mlx_gen.server.token_text import TokenText
from tests.checkpoints import llama_config, write_checkpoint
from tests.serving import running_server

S = mg.GenerationSettings


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("server") / "llama"
    write_checkpoint(
        folder,
        llama_config(eos_token_id=2),
        generation_config={"eos_token_id": [3, 2], "bos_token_id": 1},
    )
    return mg.load(folder)


@pytest.fixture(scope="module")
def url(model):
    with running_server(model, max_batch_size=8, max_queue=64) as base:
        yield base


@pytest.fixture(scope="module")
def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def chat(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def stream_chat(client, messages, **kwargs):
    """Stream one chat request; return (text, ids, logprob entries, finish, stop_reason)."""
    extra = dict(kwargs.pop("extra_body", {}), return_token_ids=True)
    text, ids, entries, finish, stop_reason = [], [], [], None, None
    for chunk in client.chat.completions.create(
        model="test", messages=messages, stream=True, extra_body=extra, **kwargs
    ):
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            ids += choice.model_extra.get("token_ids") or []
            if choice.logprobs is not None:
                entries += choice.logprobs.content or []
            if choice.finish_reason is not None:
                finish, stop_reason = choice.finish_reason, choice.model_extra.get("stop_reason")
    return "".join(text), ids, entries, finish, stop_reason


def assert_logprobs_match(entries, reference, texts: TokenText, top: int) -> None:
    """Server entries equal generate's raw reports; top sorted; chosen token included."""
    assert len(entries) == len(reference)
    for entry, ref in zip(entries, reference, strict=True):
        raw = ref["raw"]
        assert entry.model_extra["id"] == raw.token
        assert entry.bytes == list(texts.bytes_of(raw.token))
        np.testing.assert_allclose(entry.logprob, raw.logprob, atol=1e-4)
        values = [t.logprob for t in entry.top_logprobs]
        assert values == sorted(values, reverse=True) and len(values) == top
        assert [t.model_extra["id"] for t in entry.top_logprobs] == [i for i, _ in raw.top]
        np.testing.assert_allclose(values, [v for _, v in raw.top], atol=1e-4)
        if raw.rank <= top:  # the chosen token's entry is the very same number
            assert entry.top_logprobs[raw.rank - 1].logprob == entry.logprob


def test_chat_logprobs_sorted_and_equal_to_generate(model, client):
    messages = chat("hello the word")
    ref = mg.generate(model, messages=messages, settings=S(max_tokens=10, logprobs=5))
    r = client.chat.completions.create(
        model="test",
        messages=messages,
        max_tokens=10,
        logprobs=True,
        top_logprobs=5,
        extra_body={"return_token_ids": True},
    )
    choice = r.choices[0]
    assert choice.message.content == ref.text
    assert choice.model_extra["token_ids"] == ref.token_ids
    assert_logprobs_match(choice.logprobs.content, ref.logprobs, TokenText(model.tokenizer), 5)
    expected_finish = "stop" if ref.finish_reason == "stop" else "length"
    assert choice.finish_reason == expected_finish
    assert r.usage.completion_tokens == len(ref.token_ids)
    assert r.usage.prompt_tokens == len(
        model.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    )


def _cases(model) -> list[tuple[dict, S]]:
    """16 requests (kwargs, extra_body) with the settings ``generate`` needs for each."""
    base = mg.generate(model, messages=chat("case 12"), settings=S(max_tokens=12, ignore_eos=True))
    stop = base.text[4:6]
    cases = [
        ({}, {}, S()),
        ({"temperature": 1.0, "seed": 1}, {}, S(temperature=1.0, seed=1)),
        ({"temperature": 0.7, "seed": 2, "top_p": 0.9}, {}, S(temperature=0.7, seed=2, top_p=0.9)),
        ({"temperature": 1.2, "seed": 3}, {"top_k": 20}, S(temperature=1.2, seed=3, top_k=20)),
        ({"temperature": 1.0, "seed": 4}, {"min_p": 0.05}, S(temperature=1.0, seed=4, min_p=0.05)),
        ({}, {"repetition_penalty": 1.3}, S(repetition_penalty=1.3)),
        (
            {"presence_penalty": 1.0, "frequency_penalty": 0.5},
            {},
            S(presence_penalty=1.0, frequency_penalty=0.5),
        ),
        ({"logit_bias": {"40": 5, "41": -100}}, {}, S(logit_bias={40: 5.0, 41: -100.0})),
        ({}, {"suppress_tokens": [100, 101, 102]}, S(suppress_tokens=[100, 101, 102])),
        ({}, {"begin_suppress_tokens": [50, 51]}, S(begin_suppress_tokens=[50, 51])),
        (
            {"temperature": 1.0, "seed": 10},
            {"min_tokens": 5, "ignore_eos": True},
            S(temperature=1.0, seed=10, min_new_tokens=5, ignore_eos=True),
        ),
        ({}, {"bad_words": ["the", "a"]}, S(bad_words=["the", "a"])),
        ({"stop": [stop]}, {"ignore_eos": True}, S(stop=[stop], ignore_eos=True)),
        (
            {"temperature": 0.8, "seed": 13, "logprobs": True, "top_logprobs": 3},
            {},
            S(temperature=0.8, seed=13, logprobs=3),
        ),
        ({"max_tokens": 1}, {}, S(max_tokens=1)),
        (
            {"stop": stop, "temperature": 1.0, "seed": 15},
            {"include_stop_str_in_output": True, "ignore_eos": True},
            S(stop=[stop], temperature=1.0, seed=15, include_stop_str=True, ignore_eos=True),
        ),
    ]
    out = []
    for i, (kwargs, extra, settings) in enumerate(cases):
        kwargs = {"max_tokens": 12, **kwargs}
        settings = dataclasses.replace(settings, max_tokens=kwargs["max_tokens"])
        out.append((i, kwargs, extra, settings))
    return out


def test_sixteen_concurrent_streams_each_equal_their_generate_call(model, client):
    cases = _cases(model)
    refs = [mg.generate(model, messages=chat(f"case {i}"), settings=s) for i, _, _, s in cases]

    def run(case):
        i, kwargs, extra, _ = case
        return stream_chat(client, chat(f"case {i}"), extra_body=extra, **kwargs)

    with ThreadPoolExecutor(16) as pool:  # 16 streams, 8 decoded at once: rows join and leave
        results = list(pool.map(run, cases))
    texts = TokenText(model.tokenizer)
    for (i, kwargs, _, _), ref, (text, ids, entries, finish, stop_reason) in zip(
        cases, refs, results, strict=True
    ):
        assert (i, ids) == (i, ref.token_ids)
        assert (i, text) == (i, ref.text)
        assert finish == ("length" if ref.finish_reason == "length" else "stop")
        assert stop_reason == ref.matched
        if kwargs.get("logprobs"):
            assert_logprobs_match(entries, ref.logprobs, texts, kwargs["top_logprobs"])
    assert results[12][3] == "stop" and results[12][4] == cases[12][3].stop[0]


def test_n_choices_use_consecutive_seeds(model, client):
    r = client.chat.completions.create(
        model="test", messages=chat("n"), n=3, seed=5, temperature=1.0, max_tokens=8
    )
    for i, choice in enumerate(r.choices):
        ref = mg.generate(
            model, messages=chat("n"), settings=S(temperature=1.0, seed=5 + i, max_tokens=8)
        )
        assert (choice.index, choice.message.content) == (i, ref.text)
    assert len({c.message.content for c in r.choices}) > 1


def test_logit_bias_is_clamped_to_100(model, client):
    settings = S(max_tokens=4, logit_bias={77: 100.0}, logprobs=2, logprobs_modes=("processed",))
    ref = mg.generate(model, messages=chat("bias"), settings=settings)
    r = client.chat.completions.create(
        model="test",
        messages=chat("bias"),
        max_tokens=4,
        logit_bias={"77": 1000},
        logprobs=True,
        top_logprobs=2,
        extra_body={"logprobs_mode": "processed"},
    )
    entries = r.choices[0].logprobs.content
    assert [e.model_extra["id"] for e in entries] == [77] * 4 == ref.token_ids
    # A +1000 bias would push the runner-up 900 nats further down than +100 does.
    np.testing.assert_allclose(
        [e.top_logprobs[1].logprob for e in entries],
        [lp["processed"].top[1][1] for lp in ref.logprobs],
        atol=1e-3,
    )


def test_logprobs_mode_both_and_token_ids(model, client):
    settings = S(
        max_tokens=5,
        temperature=0.9,
        top_k=5,
        seed=2,
        logprobs=2,
        logprobs_modes=("raw", "processed"),
        logprob_token_ids=[7, 9],
    )
    ref = mg.generate(model, messages=chat("both"), settings=settings)
    r = client.chat.completions.create(
        model="test",
        messages=chat("both"),
        max_tokens=5,
        temperature=0.9,
        seed=2,
        logprobs=True,
        top_logprobs=2,
        extra_body={"top_k": 5, "logprobs_mode": "both", "logprob_token_ids": [7, 9]},
    )
    for entry, lp in zip(r.choices[0].logprobs.content, ref.logprobs, strict=True):
        np.testing.assert_allclose(entry.logprob, lp["raw"].logprob, atol=1e-4)
        processed = entry.model_extra["processed"]
        np.testing.assert_allclose(processed["logprob"], lp["processed"].logprob, atol=1e-4)
        assert processed["rank"] == lp["processed"].rank
        extra = entry.model_extra["token_id_logprobs"]
        np.testing.assert_allclose(
            [extra["7"], extra["9"]], list(lp["raw"].extra.values()), atol=1e-4
        )


def test_non_streaming_and_streaming_agree_with_usage_chunk(model, client):
    kwargs = {"model": "test", "messages": chat("usage"), "max_tokens": 6}
    whole = client.chat.completions.create(**kwargs)
    chunks = list(
        client.chat.completions.create(
            **kwargs, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert all(c.usage is None for c in chunks[:-1])


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"top_logprobs": 21, "logprobs": True}, "top_logprobs"),
        ({"temperature": -0.5}, "temperature"),
        ({"logit_bias": {"99999": 1}}, "logit_bias"),
        ({"logit_bias": {"x": 1}}, "logit_bias"),
        ({"n": 1000}, "n"),
        ({"max_tokens": 10_000}, "max_tokens"),
        ({"suppress_tokens": [5000]}, "suppress_tokens"),
        ({"messages": []}, "messages"),
        ({"stop": [""]}, "stop"),
        ({"top_p": 0}, "top_p"),
        ({"logprob_token_ids": [-1]}, "logprob_token_ids"),
        ({"messages": [{"role": "user", "content": "x" * 400}]}, "messages"),
        ({"tools": [{"type": "function"}]}, "tools"),
    ],
)
def test_bad_requests_are_400_naming_the_field(url, body, param):
    payload = {"model": "test", "messages": chat("x"), **body}
    r = httpx.post(url + "/v1/chat/completions", json=payload, timeout=30)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert param.split(".")[0] in error["message"] or "prompt" in error["message"]


def test_malformed_json_unknown_model_and_route(url, client):
    r = httpx.post(
        url + "/v1/chat/completions",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4", messages=chat("x"))
    assert httpx.get(url + "/v1/nothing").status_code == 404
    with pytest.raises(openai.BadRequestError, match="top_logprobs needs logprobs"):
        client.chat.completions.create(model="test", messages=chat("x"), top_logprobs=2)


def test_response_format(model, client):
    r = client.chat.completions.create(
        model="test", messages=chat("x"), max_tokens=3, response_format={"type": "text"}
    )
    assert (
        r.choices[0].message.content
        == mg.generate(model, messages=chat("x"), settings=S(max_tokens=3)).text
    )


SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 9}},
    "required": ["a"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_response_format_json_schema(client, seed):
    fmt = {"type": "json_schema", "json_schema": {"name": "t", "schema": SCHEMA, "strict": True}}
    r = client.chat.completions.create(
        model="test", messages=chat("json"), max_tokens=60, temperature=1.0, seed=seed,
        response_format=fmt,
    )  # fmt: skip
    choice = r.choices[0]
    assert choice.finish_reason == "stop", choice
    jsonschema.validate(json.loads(choice.message.content), SCHEMA)
    # The same request streamed gives the same text.
    parts = client.chat.completions.create(
        model="test", messages=chat("json"), max_tokens=60, temperature=1.0, seed=seed,
        response_format=fmt, stream=True,
    )  # fmt: skip
    assert "".join(p.choices[0].delta.content or "" for p in parts if p.choices) == (
        choice.message.content
    )


def test_response_format_json_object_and_errors(client):
    r = client.chat.completions.create(
        model="test", messages=chat("json"), max_tokens=80, temperature=0.0,
        response_format={"type": "json_object"},
    )  # fmt: skip
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(r.choices[0].message.content), dict)
    else:  # an object still open at max_tokens: a prefix of one
        assert r.choices[0].finish_reason == "length"
        assert r.choices[0].message.content.lstrip().startswith("{")
    bad = {"type": "json_schema", "json_schema": {"name": "t", "schema": {"type": "nonsense"}}}
    with pytest.raises(openai.BadRequestError, match="response_format"):
        client.chat.completions.create(model="test", messages=chat("x"), response_format=bad)
    with pytest.raises(openai.BadRequestError, match="schema is required"):
        client.chat.completions.create(
            model="test", messages=chat("x"),
            response_format={"type": "json_schema", "json_schema": {"name": "t"}},
        )  # fmt: skip


def test_models_health_and_tokenizer_routes(model, url):
    assert httpx.get(url + "/health").json()["status"] == "ok"
    assert httpx.get(url + "/v1/models").json()["data"][0]["id"] == "test"
    tok = httpx.post(
        url + "/tokenize", json={"prompt": "hello the word", "add_special_tokens": False}
    ).json()
    assert tok["tokens"] == model.tokenizer.encode("hello the word", add_special_tokens=False)
    assert tok["count"] == len(tok["tokens"]) and tok["max_model_len"] == 256
    back = httpx.post(url + "/detokenize", json={"tokens": tok["tokens"]}).json()
    assert back == {"prompt": "hello the word"}
    info = httpx.get(url + "/tokenizer_info").json()
    assert info["eos_token"] == "<|im_end|>" and "im_start" in info["chat_template"]
    r = httpx.post(url + "/detokenize", json={"tokens": [999]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tokens"


def test_api_key_strict_and_queue_full(model):
    with running_server(
        model, api_key="s3cret", strict=True, max_batch_size=1, max_queue=0
    ) as base:
        bad = openai.OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
        good = openai.OpenAI(base_url=base + "/v1", api_key="s3cret", max_retries=0)
        assert good.models.list().data[0].id == "test"
        with pytest.raises(openai.BadRequestError, match="unknown field"):
            good.chat.completions.create(
                model="test", messages=chat("x"), extra_body={"no_such_field": 1}
            )
        stream = good.chat.completions.create(
            model="test",
            messages=chat("long"),
            max_tokens=200,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        next(iter(stream))  # the one place is taken
        with pytest.raises(openai.RateLimitError):
            good.chat.completions.create(model="test", messages=chat("x"), max_tokens=2)
        stream.close()


def test_stream_pieces_are_those_of_stream_generate(model, client):
    """Stop strings are held back exactly as in stream_generate: same pieces, same order."""
    whole = mg.generate(model, messages=chat("pieces"), settings=S(max_tokens=16, ignore_eos=True))
    settings = S(max_tokens=16, ignore_eos=True, stop=[whole.text[6:9]])
    want = [c.text for c in mg.stream_generate(model, messages=chat("pieces"), settings=settings)]
    got = []
    for chunk in client.chat.completions.create(
        model="test",
        messages=chat("pieces"),
        max_tokens=16,
        stop=settings.stop,
        stream=True,
        extra_body={"ignore_eos": True, "return_token_ids": True},
    ):
        got += [c.delta.content for c in chunk.choices if c.delta.role is None]
    assert got == want and "" in want  # a piece was held back while the stop was undecided
