"""The Anthropic and Responses stream writers on their own, fed the pieces a tool-calling
and reasoning chat path will produce (reasoning, text, tool-call starts and argument
fragments): every event validates as the SDK's type, the SDKs' own stream accumulators
rebuild from them exactly the non-streamed answer built from the same pieces."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import openai
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import RawMessageStreamEvent
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from mlx_gen.server.chat_run import (
    CallArguments,
    CallStart,
    ChatOutcome,
    ReasoningPiece,
    Started,
    TextPiece,
    add_pieces,
)
from mlx_gen.server.jobs import Failed
from mlx_gen.server.messages_api.mapping import content_blocks
from mlx_gen.server.messages_api.routes import _stream as messages_stream
from mlx_gen.server.messages_api.stream import BlockWriter, event
from mlx_gen.server.responses_api.mapping import output_items
from mlx_gen.server.responses_api.routes import _stream as responses_stream
from mlx_gen.server.responses_api.routes import envelope, final_response
from mlx_gen.server.responses_api.schemas import ResponsesRequest
from mlx_gen.server.responses_api.stream import Events, ItemWriter
from mlx_gen.stream import GenerationChunk
from mlx_gen.tools import OutputParser

AGENT = [
    [ReasoningPiece("The user wants "), ReasoningPiece("the weather.")],
    [TextPiece("Let me check.")],
    [CallStart(0, "call_1", "weather"), CallArguments(0, '{"city": ')],
    [CallArguments(0, '"Paris"}')],
    [CallStart(1, "call_2", "time"), CallArguments(1, "{}")],
]
CASES = [AGENT, [[TextPiece("Hi"), TextPiece(" there")]], []]


def data_of(lines: list[str]) -> list[dict]:
    return [json.loads(line.split("data: ", 1)[1]) for line in lines]


def outcome_of(batches) -> ChatOutcome:
    outcome = ChatOutcome(finish="stop")
    for pieces in batches:
        add_pieces(outcome, pieces)
    return outcome


@pytest.mark.parametrize("batches", CASES)
def test_anthropic_stream_rebuilds_the_message(batches):
    outcome = outcome_of(batches)
    start = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": [],
             "stop_reason": None, "stop_sequence": None,
             "usage": {"input_tokens": 3, "output_tokens": 0}}  # fmt: skip
    writer = BlockWriter()
    lines = [event("message_start", {"message": start})]
    for pieces in batches:
        lines += writer.write(pieces)
    lines += writer.finish()
    delta = {
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": 9},
    }
    lines += [event("message_delta", delta), event("message_stop", {})]
    adapter, snapshot, buffers = TypeAdapter(RawMessageStreamEvent), None, {}
    for data in data_of(lines):
        parsed = adapter.validate_python(data)
        snapshot = accumulate_event(event=parsed, current_snapshot=snapshot, json_bufs=buffers)
    rebuilt = [b.model_dump(exclude_none=True) for b in snapshot.content]
    assert rebuilt == content_blocks(outcome)
    indexes = [d["index"] for d in data_of(lines) if d["type"] == "content_block_start"]
    assert indexes == list(range(len(rebuilt)))


@pytest.mark.parametrize("batches", CASES)
def test_responses_stream_rebuilds_the_response(batches):
    outcome = outcome_of(batches)
    state, req = SimpleNamespace(name="m"), ResponsesRequest(input="x")
    head = {"id": "resp_1", "created_at": 0}
    ids = iter(f"id_{i}" for i in range(10))
    ev = Events()
    writer = ItemWriter(ev, lambda prefix: next(ids))
    lines = [ev("response.created", response=envelope(state, req, head))]
    for pieces in batches:
        lines += writer.write(pieces)
    lines += writer.finish("completed")
    final = final_response(state, req, head, outcome, writer.items)
    lines.append(ev("response.completed", response=final))
    events = [TypeAdapter(ResponseStreamEvent).validate_python(d) for d in data_of(lines)]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    accumulator = ResponseStreamState(input_tools=openai.omit, text_format=openai.omit)
    for e in events:
        accumulator.handle_event(e)
    snapshot = accumulator.accumulate_event(events[-1])
    ids = iter(f"id_{i}" for i in range(10))
    want = output_items(outcome, lambda prefix: next(ids))
    want[-1]["status"] = "completed"
    assert [o.type for o in snapshot.output] == [w["type"] for w in want]
    for got, item in zip(snapshot.output, want, strict=True):
        if item["type"] == "function_call":
            assert (got.call_id, got.name, got.arguments) == (
                item["call_id"], item["name"], item["arguments"]
            )  # fmt: skip
        elif item["type"] == "message":
            assert got.content[0].text == item["content"][0]["text"]
    assert final["output"] == writer.items
    if batches is AGENT:
        kinds = [e.type for e in events]
        assert "response.reasoning_text.delta" in kinds
        assert kinds.count("response.function_call_arguments.done") == 2
        assert json.loads(final["output"][2]["arguments"]) == {"city": "Paris"}


class _FailingRun:
    """A run that generates one token, then fails (as a failed decode step does)."""

    def __init__(self) -> None:
        self.cancelled = False

    async def events(self):
        yield 0, GenerationChunk(text="Hel", token=5)
        yield 0, Failed("generation failed: boom")

    def cancel(self) -> None:
        self.cancelled = True

    def close(self) -> None:  # RequestRun.close: cancel, then free the queue places
        self.cancel()

    def cached_tokens(self) -> int:  # RequestRun.cached_tokens: no prefix cache here
        return 0


async def _drain(stream) -> list[dict]:
    return data_of([line async for line in stream])


def test_a_failure_mid_stream_is_an_error_event():
    state = SimpleNamespace(name="m")
    run = _FailingRun()
    started = Started(run, 3, OutputParser(None))
    anthropic_events = asyncio.run(_drain(messages_stream(state, "msg_1", started)))
    assert [d["type"] for d in anthropic_events] == [
        "message_start", "ping", "content_block_start", "content_block_delta", "error",
    ]  # fmt: skip
    assert anthropic_events[-1]["error"] == {
        "type": "api_error",
        "message": "generation failed: boom",
    }
    assert run.cancelled
    run = _FailingRun()
    req, head = ResponsesRequest(input="x"), {"id": "resp_1", "created_at": 0}
    stream = responses_stream(state, req, head, Started(run, 3, OutputParser(None)))
    events = asyncio.run(_drain(stream))
    assert [d["type"] for d in events][-2:] == ["error", "response.failed"]
    assert events[-1]["response"]["status"] == "failed" and run.cancelled
    for data in events:
        TypeAdapter(ResponseStreamEvent).validate_python(data)
