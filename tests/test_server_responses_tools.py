"""Function tools and reasoning on ``/v1/responses`` through the official ``openai`` SDK
(``client.responses.create``), on a tiny Hermes-template model: a function call and its
``function_call_output`` round trip, the streamed events in order with argument deltas
that concatenate to the final arguments, reasoning deltas with a thinking budget; and
the same tool request through ``/v1/messages``, ``/v1/responses`` and
``/v1/chat/completions`` gives the same tokens."""

from __future__ import annotations

import json

import anthropic
import httpx
import jsonschema
import openai
import pytest

import mlx_gen as mg
from tests.serving import running_server
from tests.test_server_tools import MARKERS, SCHEMAS, TOOLS, USER
from tests.tool_models import HERMES, THINK_OPEN, write_tool_model

#: The chat tools of test_server_tools as Responses function tools.
FUNCTIONS = [{"type": "function", **t["function"]} for t in TOOLS]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    model = mg.load(write_tool_model(tmp_path_factory.mktemp("rt") / "h", HERMES, MARKERS))
    with running_server(model) as url:
        yield url, openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)


def _ask(client, seed=3, **kw):
    args = {
        "model": "test",
        "input": "hi",
        "tools": FUNCTIONS,
        "max_output_tokens": 160,
        "temperature": 1.0,
        "extra_body": {"seed": seed, "return_token_ids": True},
        **kw,
    }
    return client.responses.create(**args)


def _calls(response) -> list:
    return [item for item in response.output if item.type == "function_call"]


def test_function_call_and_output_round_trip(served):
    url, client = served
    first = _ask(client, tool_choice={"type": "function", "name": "v"}, parallel_tool_calls=False)
    [call] = _calls(first)
    assert call.name == "v" and call.call_id.startswith("call_") and first.status == "completed"
    jsonschema.validate(json.loads(call.arguments), SCHEMAS["v"])
    history = [
        {"role": "user", "content": "hi"},
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
    ]
    second = _ask(client, input=history, max_output_tokens=20, temperature=0.0)
    chat_history = [
        *USER,
        {"role": "assistant", "content": "", "tool_calls": [{"id": call.call_id,
         "type": "function", "function": {"name": "v", "arguments": call.arguments}}]},
        {"role": "tool", "tool_call_id": call.call_id, "content": "sunny"},
    ]  # fmt: skip
    body = {"model": "test", "messages": chat_history, "tools": TOOLS, "max_tokens": 20,
            "temperature": 0.0, "return_token_ids": True}  # fmt: skip
    chat = httpx.post(url + "/v1/chat/completions", json=body, timeout=60).json()
    assert second.model_extra["token_ids"] == chat["choices"][0]["token_ids"]
    assert second.usage.input_tokens == chat["usage"]["prompt_tokens"]


#: Each output item's events, in order, by item type (``*``: zero or more deltas).
ITEM_EVENTS = {
    "message": ["content_part.added", "output_text.delta*", "output_text.done",
                "content_part.done"],
    "reasoning": ["content_part.added", "reasoning_text.delta*", "reasoning_text.done",
                  "content_part.done"],
    "function_call": ["function_call_arguments.delta*", "function_call_arguments.done"],
}  # fmt: skip


def _expected_kinds(events) -> list[str]:
    """The event types the stream must have, given the items it announced."""
    out = ["created", "in_progress"]
    for e in events:
        if e.type == "response.output_item.added":
            out.append("output_item.added")
            for kind in ITEM_EVENTS[e.item.type]:
                if kind.endswith("*"):
                    n = sum(1 for d in events if d.type == "response." + kind[:-1]
                            and d.output_index == e.output_index)  # fmt: skip
                    out += [kind[:-1]] * n
                else:
                    out.append(kind)
            out.append("output_item.done")
    return [*out, events[-1].response.status]


def test_streamed_events_in_order_and_argument_deltas_concatenate(served):
    _, client = served
    kw = {"tool_choice": "required", "parallel_tool_calls": False}
    whole = _ask(client, **kw)
    events = list(_ask(client, stream=True, **kw))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    kinds = [e.type.removeprefix("response.") for e in events]
    assert kinds == _expected_kinds(events) and kinds[-1] == "completed"
    [call] = _calls(whole)
    [added] = [e for e in events if e.type == "response.output_item.added"
               and e.item.type == "function_call"]  # fmt: skip
    at = added.output_index
    deltas = [
        e.delta
        for e in events
        if e.type == "response.function_call_arguments.delta" and e.output_index == at
    ]
    [done] = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert len(deltas) > 2 and added.item.name == call.name
    assert "".join(deltas) == done.arguments == call.arguments and done.name == call.name
    final = events[-1].response
    assert [c.arguments for c in _calls(final)] == [call.arguments]
    assert final.usage.output_tokens == whole.usage.output_tokens
    assert [i.type for i in final.output] == [i.type for i in whole.output]


def test_same_tool_request_same_tokens_on_three_surfaces(served):
    url, client = served
    anthropic_client = anthropic.Anthropic(base_url=url, api_key="x", max_retries=0)
    called = []
    for temperature, seed in [(0.0, 0), (1.0, 3), (1.0, 4)]:
        extra = {"seed": seed, "return_token_ids": True, "temperature": temperature}
        body = {"model": "test", "messages": USER, "tools": TOOLS, "tool_choice": "required",
                "max_tokens": 160, **extra}  # fmt: skip
        chat = httpx.post(url + "/v1/chat/completions", json=body, timeout=60).json()
        expected = chat["choices"][0]["token_ids"]
        response = _ask(client, tool_choice="required", temperature=temperature, seed=seed)
        message = anthropic_client.messages.create(
            model="test", max_tokens=160, messages=USER, tool_choice={"type": "any"},
            tools=[{"name": t["function"]["name"], "input_schema": t["function"]["parameters"]}
                   for t in TOOLS], extra_body=extra,
        )  # fmt: skip
        assert response.model_extra["token_ids"] == expected
        assert message.model_extra["token_ids"] == expected
        calls = chat["choices"][0]["message"]["tool_calls"] or []
        names = [c["function"]["name"] for c in calls]
        called.append(bool(names))
        assert [c.name for c in _calls(response)] == names
        assert [b.name for b in message.content if b.type == "tool_use"] == names
        assert [json.loads(c.arguments) for c in _calls(response)] == [
            json.loads(c["function"]["arguments"]) for c in calls
        ]
    assert any(called)  # (greedy thinks first on this random model: it may not call)


def test_reasoning_deltas_with_a_thinking_budget(tmp_path):
    model = mg.load(write_tool_model(tmp_path / "t", THINK_OPEN, MARKERS))
    end = model.tokenizer.encode("</think>", add_special_tokens=False)[0]
    with running_server(model) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        args = {
            "model": "test",
            "input": "hi",
            "max_output_tokens": 12,
            "temperature": 0.0,
            "extra_body": {"thinking_budget": 4, "logit_bias": {str(end): -100}},
        }
        r = client.responses.create(**args)
        events = list(client.responses.create(**args, stream=True))
        low = client.responses.create(**{**args, "extra_body": {}}, reasoning={"effort": "low"})
    reasoning = r.output[0]
    assert reasoning.type == "reasoning" and reasoning.content[0].text
    assert r.usage.output_tokens_details.reasoning_tokens == 4
    deltas = [e.delta for e in events if e.type == "response.reasoning_text.delta"]
    assert "".join(deltas) == reasoning.content[0].text
    assert events[-1].response.output[0].content[0].text == reasoning.content[0].text
    assert low.output[0].type == "reasoning"  # effort maps to a budget (1024 > 12)
    assert low.usage.output_tokens_details.reasoning_tokens <= 12


def test_prefix_cache_hits_are_reported_in_usage(tmp_path):
    model = mg.load(write_tool_model(tmp_path / "h", HERMES, MARKERS))
    cache = mg.PrefixCache(model, max_bytes=64 << 20)
    with running_server(model, prefix_cache=cache) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        anthropic_client = anthropic.Anthropic(base_url=url, api_key="x", max_retries=0)
        cold, warm = (_ask(client, max_output_tokens=4) for _ in range(2))
        tools = [{"name": t["name"], "input_schema": t["parameters"]} for t in FUNCTIONS]
        args = {"model": "test", "max_tokens": 4, "messages": USER, "tools": tools}
        message = anthropic_client.messages.create(**args)
        with anthropic_client.messages.stream(**args) as stream:
            streamed = stream.get_final_message()
    assert cold.usage.input_tokens_details.cached_tokens == 0
    cached = warm.usage.input_tokens_details.cached_tokens
    assert 0 < cached < warm.usage.input_tokens == cold.usage.input_tokens
    for m in (message, streamed):  # Anthropic counts cache reads apart from input_tokens
        assert m.usage.cache_read_input_tokens > 0
        assert m.usage.input_tokens + m.usage.cache_read_input_tokens == cold.usage.input_tokens


def test_a_call_cut_by_max_output_tokens_is_incomplete(served):
    """Cut inside its arguments (seed 3, 40 tokens): ``incomplete``, and no function_call
    item with invalid arguments in the non-streamed response (as the chat endpoint)."""
    _, client = served
    kw = {"tool_choice": {"type": "function", "name": "w"}, "max_output_tokens": 40}
    r = _ask(client, **kw)
    assert r.status == "incomplete" and _calls(r) == []
    assert r.incomplete_details.reason == "max_output_tokens"
    events = list(_ask(client, stream=True, **kw))
    assert events[-1].type == "response.incomplete"
    assert [i.type for i in events[-1].response.output][-1] == "function_call"  # streamed
    assert events[-1].response.output[-1].status == "incomplete"
