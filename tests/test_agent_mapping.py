"""The Anthropic and Responses mappings on their own (no model): requests → the chat
request's fields (tools, tool calls, tool results, thinking budgets included), chat
output (text, reasoning, tool calls) → each API's content, and the one gate."""

from __future__ import annotations

import json

import pytest

from mlx_gen.no_allowed_token import NO_TOKEN
from mlx_gen.server import chat_features
from mlx_gen.server.chat_run import ChatOutcome, add_chunk
from mlx_gen.server.errors import ApiError
from mlx_gen.server.messages_api import mapping as am
from mlx_gen.server.messages_api.errors import anthropic_body, anthropic_error
from mlx_gen.server.messages_api.schemas import CountTokensRequest, MessagesRequest
from mlx_gen.server.responses_api import mapping as rm
from mlx_gen.server.responses_api.schemas import ResponsesRequest
from mlx_gen.stream import GenerationChunk

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
CHAT_TOOL = {"type": "function", "function": {"name": "weather", "description": "Weather",
                                              "parameters": WEATHER}}  # fmt: skip
CALL = {"id": "call_1", "type": "function",
        "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}  # fmt: skip


def test_anthropic_tool_loop_maps_to_chat_tool_fields():
    req = MessagesRequest(
        max_tokens=64,
        system=[{"type": "text", "text": "be brief"}],
        tools=[{"name": "weather", "description": "Weather", "input_schema": WEATHER}],
        tool_choice={"type": "tool", "name": "weather"},
        thinking={"type": "enabled", "budget_tokens": 128},
        stop_sequences=["END"],
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "use the tool", "signature": ""},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "call_1", "name": "weather",
                 "input": {"city": "Paris"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1",
                 "content": [{"type": "text", "text": "18C"}]},
                {"type": "text", "text": "Thanks"}]},
        ],
    )  # fmt: skip
    body = am.to_chat(req, {"seed": 3})
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [CALL],
         "reasoning_content": "use the tool"},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        {"role": "user", "content": "Thanks"},
    ]  # fmt: skip
    assert body["tools"] == [CHAT_TOOL]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
    assert body["thinking_budget"] == 128 and body["stop"] == ["END"]
    assert body["seed"] == 3 and body["max_tokens"] == 64
    assert chat_features.unsupported(body) is None  # the chat path runs all of it


@pytest.mark.parametrize(
    ("choice", "chat"),
    [({"type": "auto"}, "auto"), ({"type": "any"}, "required"), ({"type": "none"}, "none")],
)
def test_anthropic_tool_choice(choice, chat):
    req = CountTokensRequest(messages=[{"role": "user", "content": "x"}], tool_choice=choice)
    assert am.to_chat(req, {})["tool_choice"] == chat


def test_anthropic_refusals_name_the_block():
    bad = [
        ({"role": "user", "content": [{"type": "image", "source": {}}]}, "messages[0].content[0]"),
        ({"role": "user", "content": [{"type": "tool_use", "id": "x", "name": "f"}]},
         "messages[0].content[0]"),
    ]  # fmt: skip
    for message, param in bad:
        with pytest.raises(ApiError) as info:
            am.to_chat(CountTokensRequest(messages=[message]), {})
        assert info.value.param == param and info.value.status == 400
    with pytest.raises(ApiError, match="budget_tokens"):
        am.to_chat(CountTokensRequest(messages=[{"role": "user", "content": "x"}],
                                      thinking={"type": "enabled"}), {})  # fmt: skip


def test_anthropic_output_from_chat_output():
    outcome = ChatOutcome(content="", reasoning="think", tool_calls=[CALL], finish="stop")
    assert am.content_blocks(outcome) == [
        {"type": "thinking", "thinking": "think", "signature": ""},
        {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
    ]
    assert am.stop_fields(outcome) == ("tool_use", None)
    assert am.stop_fields(ChatOutcome(finish="length")) == ("max_tokens", None)
    assert am.stop_fields(ChatOutcome(finish="stop_string", matched="END")) == (
        "stop_sequence",
        "END",
    )
    assert am.stop_fields(ChatOutcome(finish="stop", matched=2)) == ("end_turn", None)
    assert am.content_blocks(ChatOutcome()) == [{"type": "text", "text": ""}]


def test_responses_function_call_round_trip_maps_to_chat():
    req = ResponsesRequest(
        instructions="be brief",
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "function_call", "call_id": "call_1", "name": "weather",
             "arguments": '{"city": "Paris"}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
        ],
        tools=[{"type": "function", "name": "weather", "description": "Weather",
                "parameters": WEATHER}],
        tool_choice={"type": "function", "name": "weather"},
        reasoning={"effort": "low", "summary": "auto"},
        text={"format": {"type": "json_schema", "name": "w", "schema": WEATHER}},
        max_output_tokens=32,
    )  # fmt: skip
    body = rm.to_chat(req, {})
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
    ]
    assert body["tools"] == [CHAT_TOOL]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
    assert body["thinking_budget"] == rm.EFFORT_BUDGETS["low"]
    assert body["reasoning_effort"] == "low"
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "w", "schema": WEATHER},
    }
    assert body["max_tokens"] == 32


def test_responses_output_from_chat_output():
    ids = iter(["rs_a", "fc_b"])
    items = rm.output_items(ChatOutcome(reasoning="hm", tool_calls=[CALL]), lambda p: next(ids))
    assert items == [
        {"type": "reasoning", "id": "rs_a", "summary": [],
         "content": [{"type": "reasoning_text", "text": "hm"}]},
        {"type": "function_call", "id": "fc_b", "call_id": "call_1", "name": "weather",
         "arguments": '{"city": "Paris"}', "status": "completed"},
    ]  # fmt: skip
    assert json.loads(items[1]["arguments"]) == {"city": "Paris"}
    assert rm.incomplete(ChatOutcome(finish="length")) == {"reason": "max_output_tokens"}
    assert rm.incomplete(ChatOutcome(finish="stop")) is None


def test_gate_follows_the_flags(monkeypatch):
    body = {"messages": [{"role": "tool", "content": "x"}], "thinking_budget": 5}
    assert chat_features.unsupported(body) is None  # both are supported
    monkeypatch.setattr(chat_features, "TOOLS_SUPPORTED", False)
    monkeypatch.setattr(chat_features, "THINKING_SUPPORTED", False)
    assert chat_features.unsupported(body) == "tool"
    monkeypatch.setattr(chat_features, "TOOLS_SUPPORTED", True)
    assert chat_features.unsupported(body) == "thinking_budget"


def test_parallel_tool_use_and_extensions_map_to_chat():
    choice = {"type": "any", "disable_parallel_tool_use": True}
    req = MessagesRequest(max_tokens=4, messages=[{"role": "user", "content": "x"}],
                          tool_choice=choice)  # fmt: skip
    body = am.to_chat(req, {"thinking_budget": 3, "tool_format": "hermes"})
    assert body["tool_choice"] == "required" and body["parallel_tool_calls"] is False
    assert body["thinking_budget"] == 3 and body["tool_format"] == "hermes"
    body = rm.to_chat(ResponsesRequest(input="x", parallel_tool_calls=False), {})
    assert body["parallel_tool_calls"] is False
    assert "parallel_tool_calls" not in rm.to_chat(ResponsesRequest(input="x"), {})


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (503, "overloaded_error"),
        (500, "api_error"),
    ],
)
def test_anthropic_error_types(status, kind):
    body = {"error": {"message": "m", "type": "x", "param": None, "code": None}}
    rewritten = json.loads(anthropic_body(status, json.dumps(body).encode()))
    assert rewritten == {"type": "error", "error": {"type": kind, "message": "m"}}
    assert anthropic_error(status, "m") == {"error": {"type": kind, "message": "m"}}


def test_a_token_less_last_chunk_adds_no_id():
    """``NO_TOKEN`` (a constraint that allowed nothing) is not a generated token."""
    outcome = ChatOutcome()
    add_chunk(outcome, GenerationChunk(text="a", token=7))
    add_chunk(outcome, GenerationChunk(text="", token=NO_TOKEN, finish_reason="no_allowed_token"))
    assert outcome.token_ids == [7] and outcome.finish == "no_allowed_token"
