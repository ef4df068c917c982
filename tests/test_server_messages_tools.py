"""Tools and thinking on ``/v1/messages`` through the official ``anthropic`` SDK, on tiny
models whose templates speak Hermes tool calls and open a think block: a forced tool
call whose ``input`` validates, a two-turn tool loop equal to the chat endpoint's, a
thinking budget of exactly N tokens, and streams equal to the non-streamed replies."""

from __future__ import annotations

import json

import anthropic
import httpx
import jsonschema
import pytest

import mlx_gen as mg
from tests.serving import running_server
from tests.test_server_tools import MARKERS, SCHEMAS, TOOLS
from tests.tool_models import HERMES, THINK_OPEN, write_tool_model

USER = [{"role": "user", "content": "hi"}]
#: The chat tools of test_server_tools as Anthropic tools.
ANTHROPIC_TOOLS = [
    {"name": t["function"]["name"], "input_schema": t["function"]["parameters"]} for t in TOOLS
]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    model = mg.load(write_tool_model(tmp_path_factory.mktemp("mt") / "h", HERMES, MARKERS))
    with running_server(model) as url:
        yield url, anthropic.Anthropic(base_url=url, api_key="x", max_retries=0)


def _ask(client, stream=False, temperature=1.0, seed=3, **kw):
    """A tool request (the SDK sends ``temperature`` and mlx_gen's fields as extra body)."""
    extra = {"temperature": temperature, "seed": seed, "return_token_ids": True}
    args = {
        "model": "test",
        "max_tokens": 160,
        "messages": USER,
        "tools": ANTHROPIC_TOOLS,
        "extra_body": extra,
        **kw,
    }
    if stream:
        with client.messages.stream(**args) as s:
            events = list(s)
            return events, s.get_final_message()
    return client.messages.create(**args)


def _calls(message) -> list[tuple[str, dict]]:
    return [(b.name, b.input) for b in message.content if b.type == "tool_use"]


@pytest.mark.parametrize("name", ["v", "w"])
def test_forced_tool_call_validates_and_streams_the_same(served, name):
    _, client = served
    choice = {"type": "tool", "name": name, "disable_parallel_tool_use": True}
    r = _ask(client, tool_choice=choice)
    assert r.stop_reason == "tool_use" and r.stop_sequence is None
    [block] = [b for b in r.content if b.type == "tool_use"]
    assert block.name == name and block.id.startswith("call_")
    jsonschema.validate(block.input, SCHEMAS[name])
    events, final = _ask(client, stream=True, tool_choice=choice)
    assert _calls(final) == _calls(r) and final.stop_reason == "tool_use"
    texts = [(b.type, getattr(b, "text", None)) for b in final.content]
    assert texts == [(b.type, getattr(b, "text", None)) for b in r.content]
    fragments = [
        e.delta.partial_json
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
    ]
    assert len(fragments) > 2
    kinds = [e.type for e in events if e.type.startswith(("message", "content_block"))]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert final.usage.output_tokens == r.usage.output_tokens


def test_any_gives_a_valid_call_and_none_gives_text(served):
    _, client = served
    for seed in range(3):
        r = _ask(client, tool_choice={"type": "any"}, seed=seed)
        assert r.stop_reason == "tool_use"
        for name, args in _calls(r):
            jsonschema.validate(args, SCHEMAS[name])
        r = _ask(client, tool_choice={"type": "none"}, max_tokens=30, seed=seed)
        assert _calls(r) == [] and r.stop_reason in ("end_turn", "max_tokens")
        assert "<tool_call>" not in r.content[0].text


def test_two_turn_tool_loop_equals_the_chat_endpoint(served):
    url, client = served
    choice = {"type": "tool", "name": "w", "disable_parallel_tool_use": True}
    first = _ask(client, tool_choice=choice)
    [call] = [b for b in first.content if b.type == "tool_use"]
    text = "".join(b.text for b in first.content if b.type == "text")
    result = {"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}
    history = [
        *USER,
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {"role": "user", "content": [result]},
    ]
    second = _ask(client, messages=history, max_tokens=20, temperature=0.0)
    assert second.stop_reason in ("end_turn", "max_tokens", "tool_use")
    function = {"name": "w", "arguments": json.dumps(call.input)}
    chat_history = [
        *USER,
        {"role": "assistant", "content": text,
         "tool_calls": [{"id": call.id, "type": "function", "function": function}]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]  # fmt: skip
    body = {"model": "test", "messages": chat_history, "tools": TOOLS, "max_tokens": 20,
            "temperature": 0.0, "return_token_ids": True}  # fmt: skip
    chat = httpx.post(url + "/v1/chat/completions", json=body, timeout=60).json()
    assert second.model_extra["token_ids"] == chat["choices"][0]["token_ids"]
    template = httpx.post(url + "/apply-template", json=body, timeout=60).json()
    assert "<tool_response>\nsunny\n</tool_response>" in template["prompt"]
    assert json.dumps(call.input, ensure_ascii=False) in template["prompt"]  # the call, as sent
    count = client.messages.count_tokens(model="test", messages=history, tools=ANTHROPIC_TOOLS)
    assert count.input_tokens == len(template["prompt_token_ids"]) == second.usage.input_tokens


def test_thinking_budget_gives_exactly_n_thinking_tokens(tmp_path):
    model = mg.load(write_tool_model(tmp_path / "t", THINK_OPEN, MARKERS))
    end = model.tokenizer.encode("</think>", add_special_tokens=False)[0]
    expected = mg.generate(
        model,
        messages=USER,
        settings=mg.GenerationSettings(
            temperature=0.0, max_tokens=12, max_thinking_tokens=4, logit_bias={end: -100}
        ),
    )
    assert expected.token_ids[4] == end and expected.reasoning
    with running_server(model) as url:
        client = anthropic.Anthropic(base_url=url, api_key="x", max_retries=0)
        args = {
            "model": "test",
            "max_tokens": 12,
            "messages": USER,
            "thinking": {"type": "enabled", "budget_tokens": 4},
            "extra_body": {
                "temperature": 0.0,
                "logit_bias": {str(end): -100},
                "return_token_ids": True,
            },
        }
        r = client.messages.create(**args)
        assert r.model_extra["token_ids"] == expected.token_ids
        assert r.content[0].type == "thinking" and r.content[0].thinking == expected.reasoning
        text = [b.text for b in r.content if b.type == "text"]
        assert text == [expected.content or ""]
        with client.messages.stream(**args) as stream:
            events = list(stream)
            final = stream.get_final_message()
    deltas = [e.delta for e in events if e.type == "content_block_delta"]
    thinking = [d.thinking for d in deltas if d.type == "thinking_delta"]
    assert "".join(thinking) == expected.reasoning and len(thinking) >= 2
    assert [b.model_dump() for b in final.content] == [b.model_dump() for b in r.content]


def test_a_call_cut_by_max_tokens_is_max_tokens_not_a_tool_use(served):
    """Cut inside its arguments (seed 3, 40 tokens): no invalid ``input`` (it was a 500),
    ``stop_reason`` ``max_tokens`` streamed or not, and the chat endpoint's message."""
    url, client = served
    choice = {"type": "tool", "name": "w"}
    r = _ask(client, tool_choice=choice, max_tokens=40)
    assert r.stop_reason == "max_tokens" and _calls(r) == []
    events, final = _ask(client, stream=True, tool_choice=choice, max_tokens=40)
    assert final.stop_reason == "max_tokens"
    assert [b.type for b in final.content][-1] == "tool_use"  # its start was streamed
    body = {
        "model": "test",
        "messages": USER,
        "tools": TOOLS,
        "max_tokens": 40,
        "seed": 3,
        "temperature": 1.0,
        "tool_choice": {"type": "function", "function": {"name": "w"}},
    }
    chat = httpx.post(url + "/v1/chat/completions", json=body, timeout=60).json()["choices"][0]
    assert chat["finish_reason"] == "length" and chat["message"]["tool_calls"] is None
    assert [b.text for b in r.content] == [chat["message"]["content"]]


def test_models_card_names_the_tool_family_and_reasoning(served):
    url, _ = served
    card = httpx.get(url + "/v1/models", timeout=30).json()["data"][0]
    assert card["capabilities"] == {
        "structured_output": True,
        "tools": True,
        "tool_format": "hermes",
        "reasoning": True,  # <think> and </think> are single tokens of its vocabulary
    }
