"""Tool calling and reasoning through the official ``openai`` client."""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest

import mlx_gen as mg
from tests.serving import running_server
from tests.tool_models import HERMES, QWEN3, THINK_OPEN, write_tool_model

W = {
    "type": "object",
    "properties": {"c": {"type": "string", "maxLength": 3}},
    "required": ["c"],
    "additionalProperties": False,
}
V = {
    "type": "object",
    "properties": {"k": {"enum": ["a", "b"]}},
    "required": ["k"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "w", "parameters": W}},
    {"type": "function", "function": {"name": "v", "parameters": V}},
]
SCHEMAS = {"w": W, "v": V}
USER = [{"role": "user", "content": "hi"}]
MARKERS = ["<tool_call>", "</tool_call>", "<think>", "</think>"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("server_tools")
    hermes = mg.load(write_tool_model(root / "h", HERMES, MARKERS))
    with running_server(hermes) as url:
        yield hermes, url, openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)


def _ask(client, **kw):
    args = {
        "model": "test",
        "messages": USER,
        "tools": TOOLS,
        "temperature": 1.0,
        "seed": 3,
        "max_tokens": 160,
        **kw,
    }
    return client.chat.completions.create(**args)


def _valid(call):
    jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "v"}}])
def test_calls_non_streamed(served, choice):
    _, _, client = served
    r = _ask(client, tool_choice=choice, parallel_tool_calls=False)
    message = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls" and len(message.tool_calls) == 1
    call = message.tool_calls[0]
    assert call.id.startswith("call_") and call.type == "function"
    if isinstance(choice, dict):
        assert call.function.name == "v"
    _valid(call)


def test_calls_streamed_fragments_concatenate(served):
    model, _, client = served
    whole = _ask(client, tool_choice="required", parallel_tool_calls=False)
    stream = _ask(client, tool_choice="required", parallel_tool_calls=False, stream=True)
    deltas = [c.choices[0] for c in stream if c.choices]
    calls = [tc for d in deltas for tc in (d.delta.tool_calls or [])]
    first = calls[0]
    assert first.index == 0 and first.id.startswith("call_") and first.function.name
    fragments = [tc.function.arguments for tc in calls[1:]]
    assert all(tc.id is None and tc.index == 0 for tc in calls[1:]) and len(fragments) > 2
    final = whole.choices[0].message.tool_calls[0]
    assert "".join(fragments) == final.function.arguments  # same seed, same call
    assert first.function.name == final.function.name
    assert deltas[-1].finish_reason == "tool_calls"


def test_auto_and_none(served):
    """With the marker favoured by ``logit_bias``, ``none`` still never produces it and
    ``auto`` gives valid calls."""
    model, _, client = served
    marker = model.tokenizer.encode("<tool_call>", add_special_tokens=False)[0]
    bias = {str(marker): 6}
    calls = 0
    for seed in range(3):
        none = _ask(client, tool_choice="none", seed=seed, max_tokens=30, logit_bias=bias)
        assert none.choices[0].message.tool_calls is None
        assert "<tool_call>" not in (none.choices[0].message.content or "")
        auto = _ask(client, tool_choice="auto", seed=seed, max_tokens=160, logit_bias=bias)
        for call in auto.choices[0].message.tool_calls or []:
            _valid(call)
            calls += 1
    assert calls >= 3


def test_parallel_tool_calls_false_gives_one_call(served):
    _, _, client = served
    counts, parallel = set(), set()
    for seed in range(4):
        r = _ask(client, tool_choice="required", parallel_tool_calls=False, seed=seed)
        counts.add(len(r.choices[0].message.tool_calls))
        r = _ask(client, tool_choice="required", seed=seed, max_tokens=200)
        parallel.add(len(r.choices[0].message.tool_calls))
    assert counts == {1}
    assert max(parallel) >= 2  # without the switch, this random model chains calls


def test_two_turn_agent_loop(served):
    _, url, client = served
    first = _ask(client, tool_choice="w")
    call = first.choices[0].message.tool_calls[0]
    messages = [
        *USER,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    second = _ask(client, messages=messages, tool_choice="none", max_tokens=20)
    assert second.choices[0].message.tool_calls is None
    assert second.choices[0].finish_reason in ("stop", "length")
    # The second turn's prompt holds the call (arguments once encoded) and its result.
    r = httpx.post(url + "/apply-template", json={"messages": messages, "tools": TOOLS}, timeout=30)
    prompt = r.json()["prompt"]
    assert f'"arguments": {call.function.arguments}}}' in prompt
    assert "<tool_response>\nsunny\n</tool_response>" in prompt


def test_bad_tool_requests_are_400(served):
    _, url, client = served
    with pytest.raises(openai.BadRequestError, match="not a declared tool"):
        _ask(client, tool_choice={"type": "function", "function": {"name": "zz"}})
    bad = [
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "x",
                            "parameters": {
                                "type": "object",
                                "properties": {"a": {"type": "array", "uniqueItems": True}},
                            },
                        },
                    }
                ]
            },
            "tools",
        ),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages"),
        ({"chat_template_kwargs": {"tools": 1}}, "chat_template_kwargs"),
        ({"thinking_budget": -1}, "thinking_budget"),
        ({"tool_format": "nope"}, "tool_format"),
    ]
    for body, param in bad:
        payload = {"model": "test", "messages": USER, "tools": TOOLS, **body}
        r = httpx.post(url + "/v1/chat/completions", json=payload, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, (body, r.text)


def test_apply_template(served):
    _, url, _ = served
    r = httpx.post(url + "/apply-template", json={"messages": USER, "tools": TOOLS}, timeout=30)
    doc = r.json()
    assert r.status_code == 200 and "<tools>" in doc["prompt"] and doc["tool_format"] == "hermes"


def test_reasoning_fields_and_thinking_budget(tmp_path):
    model = mg.load(write_tool_model(tmp_path / "t", THINK_OPEN, MARKERS))
    end = model.tokenizer.encode("</think>", add_special_tokens=False)[0]
    with running_server(model) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        args = {
            "model": "test",
            "messages": USER,
            "temperature": 0.0,
            "max_tokens": 12,
            "logit_bias": {str(end): -100},
            "extra_body": {"thinking_budget": 4, "return_token_ids": True},
        }
        r = client.chat.completions.create(**args)
        message = r.choices[0].message
        reasoning = message.model_extra["reasoning"]
        assert message.model_extra["reasoning_content"] == reasoning and reasoning
        expected = mg.generate(
            model,
            messages=USER,
            settings=mg.GenerationSettings(
                temperature=0.0, max_tokens=12, max_thinking_tokens=4, logit_bias={end: -100}
            ),
        )
        assert r.choices[0].model_extra["token_ids"] == expected.token_ids
        assert expected.token_ids[4] == end
        assert reasoning == expected.reasoning and message.content == (expected.content or None)
        stream = client.chat.completions.create(**args, stream=True)
        deltas = [c.choices[0].delta for c in stream if c.choices]
        streamed = "".join(d.model_extra.get("reasoning") or "" for d in deltas)
        assert streamed == reasoning
        assert "".join(d.model_extra.get("reasoning_content") or "" for d in deltas) == reasoning


def test_reasoning_effort_and_template_kwargs_reach_the_template(tmp_path):
    effort = "{% if reasoning_effort is defined %}effort={{ reasoning_effort }}{% endif %}"
    model = mg.load(write_tool_model(tmp_path / "q", QWEN3 + effort, MARKERS))
    with running_server(model, strict=True) as url:
        body = {"model": "test", "messages": USER}

        def prompt(**kw):
            r = httpx.post(url + "/apply-template", json={**body, **kw}, timeout=30)
            assert r.status_code == 200, r.text
            return r.json()["prompt"]

        assert prompt().endswith("<|im_start|>assistant\n")
        assert prompt(reasoning_effort="low").endswith("assistant\neffort=low")
        closed = prompt(chat_template_kwargs={"enable_thinking": False})
        assert closed.endswith("assistant\n<think>\n\n</think>\n\n")
        # A strict server takes both on a completion too (they are fields, not ignored).
        r = httpx.post(
            url + "/v1/chat/completions",
            json={
                **body,
                "reasoning_effort": "high",
                "max_tokens": 2,
                "parallel_tool_calls": False,
            },
            timeout=30,
        )
        assert r.status_code == 200, r.text
