"""Anthropic's ``/v1/messages`` through the official ``anthropic`` SDK.

The reply must be the chat endpoint's for the same prompt, settings and seed; the
stream's events must parse as the SDK's typed events, in Anthropic's order; errors must
come in Anthropic's shape.
"""

from __future__ import annotations

import json

import anthropic
import httpx
import jsonschema
import openai
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from pydantic import TypeAdapter

import mlx_gen as mg
from mlx_gen.prompts import encode_prompt
from tests.checkpoints import llama_config, write_checkpoint
from tests.serving import running_server

USER = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("messages") / "llama"
    write_checkpoint(
        folder,
        llama_config(eos_token_id=2),
        generation_config={"eos_token_id": [3, 2], "bos_token_id": 1},
    )
    return mg.load(folder)


@pytest.fixture(scope="module")
def url(model):
    with running_server(model, max_batch_size=4) as base:
        yield base


@pytest.fixture(scope="module")
def client(url):
    return anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0)


def sse_events(url: str, body: dict) -> list[tuple[str, dict]]:
    """``(event name, data)`` of a streamed request, read raw."""
    out, name = [], None
    with httpx.stream("POST", url + "/v1/messages", json=body, timeout=60) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                out.append((name, json.loads(line[6:])))
    return out


@pytest.mark.parametrize("extra", [{"temperature": 0.0}, {"temperature": 1.0, "seed": 7}])
def test_text_streamed_equals_non_streamed_and_chat(client, url, extra):
    temperature = extra["temperature"]
    seed = {"seed": extra["seed"]} if "seed" in extra else {}
    # The SDK dropped temperature/top_p/top_k; older clients (and extra_body) send them.
    m = client.messages.create(model="test", max_tokens=12, messages=USER, extra_body=extra)
    assert m.stop_reason in ("max_tokens", "end_turn") and m.content[0].type == "text"
    assert m.usage.output_tokens == (12 if m.stop_reason == "max_tokens" else m.usage.output_tokens)
    with client.messages.stream(
        model="test", max_tokens=12, messages=USER, extra_body=extra
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == m.content[0].text and final.stop_reason == m.stop_reason
    assert final.usage.output_tokens == m.usage.output_tokens
    chat = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
    c = chat.chat.completions.create(
        model="test", messages=USER, max_tokens=12, temperature=temperature, **seed
    )
    assert c.choices[0].message.content == m.content[0].text
    assert c.usage.completion_tokens == m.usage.output_tokens
    assert c.usage.prompt_tokens == m.usage.input_tokens


def test_stream_events_in_anthropic_order(url):
    body = {"max_tokens": 6, "messages": USER, "stream": True, "temperature": 0}
    events = sse_events(url, body)
    names = [n for n, _ in events]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) <= {"content_block_delta"}
    adapter = TypeAdapter(RawMessageStreamEvent)
    for name, data in events:
        if name != "ping":
            assert adapter.validate_python(data).type == name == data["type"]
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "max_tokens" and delta["usage"]["output_tokens"] == 6
    start = events[0][1]["message"]
    assert start["usage"]["input_tokens"] > 0 and start["content"] == []
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    whole = httpx.post(url + "/v1/messages", json={**body, "stream": False}).json()
    Message.model_validate(whole)
    assert whole["content"] == [{"type": "text", "text": text}]


def test_stop_sequence_system_and_extensions(client, url, model):
    greedy = {"ignore_eos": True, "temperature": 0}
    base = client.messages.create(model="test", max_tokens=16, messages=USER, extra_body=greedy)
    stop = base.content[0].text[4:6]
    assert stop
    m = client.messages.create(
        model="test", max_tokens=16, messages=USER, stop_sequences=[stop], extra_body=greedy
    )
    assert m.stop_reason == "stop_sequence" and m.stop_sequence == stop
    assert m.content[0].text == base.content[0].text[: base.content[0].text.index(stop)]
    body = {"max_tokens": 16, "messages": USER, "stop_sequences": [stop], "stream": True,
            **greedy}  # fmt: skip
    events = sse_events(url, body)
    assert events[-2][1]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": stop}
    streamed = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert streamed == m.content[0].text
    # system (blocks) → the chat template's system message; same as mg.generate
    blocks = [{"type": "text", "text": "be "}, {"type": "text", "text": "brief"}]
    m = client.messages.create(
        model="test", max_tokens=8, system=blocks, messages=USER, extra_body={"temperature": 0}
    )
    messages = [{"role": "system", "content": "be brief"}, *USER]
    want = mg.generate(model, messages=messages, settings=mg.GenerationSettings(max_tokens=8,
                       temperature=0.0))  # fmt: skip
    assert m.content[0].text == want.text


def test_count_tokens_equals_the_chat_prompt(client, url, model):
    system = "you are terse"
    n = client.messages.count_tokens(model="test", system=system, messages=USER).input_tokens
    messages = [{"role": "system", "content": system}, *USER]
    assert n == len(encode_prompt(model.tokenizer, messages=messages))
    applied = httpx.post(url + "/apply-template", json={"messages": messages}).json()
    tokenized = httpx.post(url + "/tokenize", json={"messages": messages}).json()
    assert n == len(applied["prompt_token_ids"]) == tokenized["count"]
    assert applied["prompt_token_ids"] == tokenized["tokens"]
    assert applied["prompt"].startswith("<|im_start|>system\nyou are terse")
    m = client.messages.create(model="test", max_tokens=1, system=system, messages=USER)
    assert m.usage.input_tokens == n


SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 9}},
    "required": ["a"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("seed", [1, 2])
def test_output_config_json_schema(client, seed):
    m = client.messages.create(
        model="test", max_tokens=60, messages=USER,
        output_config={"format": {"type": "json_schema", "schema": SCHEMA}},
        extra_body={"temperature": 1.0, "seed": seed},
    )  # fmt: skip
    assert m.stop_reason == "end_turn"
    jsonschema.validate(json.loads(m.content[0].text), SCHEMA)
    with client.messages.stream(
        model="test", max_tokens=60, messages=USER,
        output_config={"format": {"type": "json_schema", "schema": SCHEMA}},
        extra_body={"temperature": 1.0, "seed": seed},
    ) as stream:  # fmt: skip
        final = stream.get_final_message()
    assert final.stop_reason == "end_turn" and final.content[0].text == m.content[0].text


def _anthropic_shape(r: httpx.Response, status: int, kind: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == kind, body
    assert set(body) == {"type", "error"} and isinstance(body["error"]["message"], str)
    return body["error"]


def test_errors_in_anthropic_shape(client, url):
    post = lambda body: httpx.post(url + "/v1/messages", json=body)  # noqa: E731
    err = _anthropic_shape(post({"messages": USER}), 400, "invalid_request_error")
    assert "max_tokens" in err["message"]
    err = _anthropic_shape(post({"max_tokens": 2, "messages": USER, "model": "other"}),
                           404, "not_found_error")  # fmt: skip
    assert "other" in err["message"]
    _anthropic_shape(httpx.post(url + "/v1/messages/nope", json={}), 404, "not_found_error")
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": ""}}
    err = _anthropic_shape(
        post({"max_tokens": 2, "messages": [{"role": "user", "content": [image]}]}),
        400, "invalid_request_error",
    )  # fmt: skip
    assert "messages[0].content[0]" in err["message"] and "'image'" in err["message"]
    _anthropic_shape(post({"max_tokens": 2, "messages": USER, "temperature": -1}),
                     400, "invalid_request_error")  # fmt: skip
    err = _anthropic_shape(post({"max_tokens": 2, "messages": USER, "stop_sequences": [""]}),
                           400, "invalid_request_error")  # fmt: skip
    assert err["message"].startswith("stop_sequences: ")
    with pytest.raises(anthropic.BadRequestError, match="seed"):
        client.messages.create(model="test", max_tokens=2, messages=USER, extra_body={"seed": -1})
    # the OpenAI routes keep OpenAI's shape
    assert "error" in httpx.post(url + "/v1/chat/completions", json={}).json()


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0]"),
        ({"tool_choice": {"type": "sometimes"}}, "tool_choice"),
        ({"thinking": {"type": "enabled", "budget_tokens": 0}}, "thinking"),
        ({"thinking": {"type": "enabled", "budget_tokens": 8}}, "thinking"),  # no <think>
        ({"tools": [{"name": "f", "input_schema": {"type": "object"}}],
          "tool_choice": {"type": "tool", "name": "zz"}}, "tool_choice"),
        ({"messages": [{"role": "user", "content": [
            {"type": "tool_use", "id": "t1", "name": "f", "input": {}}]}]}, "messages[0]"),
        # wrongly typed values inside blocks: a 400 naming them, never a 500
        ({"messages": [{"role": "user", "content": [{"type": "tool_result",
            "tool_use_id": "t1", "content": 5}]}]}, "messages[0].content[0].content"),
        ({"messages": [{"role": "user", "content": [{"type": "tool_result",
            "tool_use_id": "t1", "content": [5]}]}]}, "messages[0].content[0].content[0]"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
         "messages[0].content[0]"),
        ({"output_config": {"format": 5}}, "output_config.format"),
    ],
)  # fmt: skip
def test_bad_tools_and_thinking_are_400_naming_the_field(url, extra, field):
    created = httpx.post(url + "/v1/messages", json={"max_tokens": 2, "messages": USER, **extra})
    counted = httpx.post(url + "/v1/messages/count_tokens", json={"messages": USER, **extra})
    for r in (created, counted):  # count_tokens names it the same way
        err = _anthropic_shape(r, 400, "invalid_request_error")
        message = err["message"]
        assert message.startswith(field) and message[len(field)] in ":. =", err


def test_api_key_and_queue_full(model):
    with running_server(model, api_key="k3y", max_batch_size=1, max_queue=0, strict=True) as base:
        bad = anthropic.Anthropic(base_url=base, api_key="wrong", max_retries=0)
        with pytest.raises(anthropic.AuthenticationError) as info:
            bad.messages.create(model="test", max_tokens=2, messages=USER)
        assert info.value.body["error"]["type"] == "authentication_error"
        good = anthropic.Anthropic(base_url=base, api_key="k3y", max_retries=0)
        bearer = anthropic.Anthropic(base_url=base, auth_token="k3y", max_retries=0)
        assert bearer.messages.count_tokens(model="test", messages=USER).input_tokens > 0
        with pytest.raises(anthropic.BadRequestError, match="unknown field"):
            good.messages.create(model="test", max_tokens=2, messages=USER,
                                 extra_body={"no_such_field": 1})  # fmt: skip
        good.messages.create(
            model="test", max_tokens=2, messages=USER, metadata={"user_id": "u"}
        )  # fmt: skip  (ignored, even strict)
        with good.messages.stream(
            model="test", max_tokens=200, messages=USER, extra_body={"ignore_eos": True}
        ) as stream:
            next(iter(stream.text_stream))  # the one place is taken
            with pytest.raises(anthropic.RateLimitError) as info:
                good.messages.create(model="test", max_tokens=2, messages=USER)
            assert info.value.body["error"]["type"] == "rate_limit_error"


def test_logprobs_extension_equals_chat_streamed_or_not(url):
    """mlx_gen's ``logprobs`` / ``top_logprobs``: the chat endpoint's entries on the reply,
    and the same entries spread over the stream's deltas (the rest on ``message_delta``)."""
    body = {"max_tokens": 10, "messages": USER, "temperature": 0, "stop_sequences": ["\n"],
            "logprobs": True, "top_logprobs": 3}  # fmt: skip
    whole = httpx.post(url + "/v1/messages", json=body, timeout=60).json()
    Message.model_validate(whole)
    chat_body = {**body, "stop": body["stop_sequences"]}
    del chat_body["stop_sequences"]
    chat = httpx.post(url + "/v1/chat/completions", json=chat_body, timeout=60).json()
    want = [  # chat's entries, without the members it sends as null
        {k: v for k, v in e.items() if v is not None}
        for e in chat["choices"][0]["logprobs"]["content"]
    ]
    assert whole["logprobs"]["content"] == want and len(want) == whole["usage"]["output_tokens"]
    assert all(len(e["top_logprobs"]) == 3 for e in want)
    events = sse_events(url, {**body, "stream": True})
    adapter = TypeAdapter(RawMessageStreamEvent)
    for name, data in events:
        if name != "ping":
            adapter.validate_python(data)
    streamed = [e for _, d in events for e in d.get("logprobs", [])]
    assert streamed == want
    plain = httpx.post(url + "/v1/messages", json={**body, "logprobs": False}).json()
    assert "logprobs" not in plain
    r = httpx.post(url + "/v1/messages", json={**body, "top_logprobs": 21})
    assert _anthropic_shape(r, 400, "invalid_request_error")["message"].find("top_logprobs") >= 0
