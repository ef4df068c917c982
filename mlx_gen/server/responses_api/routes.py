"""``POST /v1/responses`` (stateless), streamed or not.

The request becomes a chat request (:mod:`.mapping`) and runs on the chat path
(:mod:`mlx_gen.server.chat_run`). A stream sends the typed events in order, each with
its ``sequence_number``: ``response.created``, ``response.in_progress``,
``response.output_item.added``, ``response.content_part.added``,
``response.output_text.delta`` s, ``response.output_text.done``,
``response.content_part.done``, ``response.output_item.done``, then
``response.completed`` (or ``response.incomplete`` at ``max_output_tokens``); a failure
mid-stream is an ``error`` event followed by ``response.failed``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

from mlx_gen.server import chat_run
from mlx_gen.server.chat_features import unsupported
from mlx_gen.server.chat_run import ChatOutcome
from mlx_gen.server.errors import ApiError, error_body
from mlx_gen.server.extensions import chat_request, extensions, renamed
from mlx_gen.server.responses_api.mapping import (
    FIELD_NAMES,
    incomplete,
    message_item,
    output_items,
    text_part,
    to_chat,
)
from mlx_gen.server.responses_api.schemas import IGNORED, ResponsesRequest
from mlx_gen.server.state import ServerState
from mlx_gen.server.streaming import new_id, now
from mlx_gen.server.worker import Failed


def _envelope(state: ServerState, req: ResponsesRequest, head: dict, **fields: Any) -> dict:
    """The response object: ``head`` (id, created_at), the request's echo, then ``fields``."""
    extra = req.model_extra or {}
    return {
        **head,
        "object": "response",
        "model": state.name,
        "status": "in_progress",
        "output": [],
        "error": None,
        "incomplete_details": None,
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "tools": req.tools or [],
        "tool_choice": req.tool_choice or "auto",
        "parallel_tool_calls": extra.get("parallel_tool_calls", True),
        "text": req.text or {"format": {"type": "text"}},
        "reasoning": req.reasoning,
        "store": False,
        "previous_response_id": None,
        "metadata": extra.get("metadata") or {},
        "truncation": "disabled",
        "usage": None,
        **fields,
    }


def _usage(outcome: ChatOutcome) -> dict:
    out = len(outcome.token_ids)
    return {
        "input_tokens": outcome.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": out,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": outcome.prompt_tokens + out,
    }


def _final(state, req, head, outcome: ChatOutcome, ids) -> dict:
    details = incomplete(outcome)
    status = "completed" if details is None else "incomplete"
    output = output_items(outcome, ids)
    for item in output:
        item["status"] = status
    return _envelope(
        state,
        req,
        head,
        status=status,
        incomplete_details=details,
        output=output,
        usage=_usage(outcome),
    )


async def create_response(state: ServerState, req: ResponsesRequest, request: Request):
    """Answer ``req``: a ``response`` object, or the typed event stream."""
    state.check_model(req.model)
    body = to_chat(req, extensions(req.model_extra, strict=state.strict, ignored=IGNORED))
    feature = unsupported(body)
    if feature is not None:
        name = FIELD_NAMES[feature]
        raise ApiError(400, f"{name}: not supported yet by this server", param=name)
    chat = chat_request(body, FIELD_NAMES)
    try:
        run, prompt_len = await chat_run.start(state, chat)
    except ApiError as err:
        raise renamed(err, FIELD_NAMES) from None
    head = {"id": new_id("resp"), "created_at": now()}
    if req.stream:
        return StreamingResponse(
            _stream(state, req, head, run, prompt_len), media_type="text/event-stream"
        )
    outcome = await chat_run.collect(run, prompt_len, request)
    response = _final(state, req, head, outcome, new_id)
    if chat.return_token_ids:
        response["token_ids"] = outcome.token_ids
    return response


class _Events:
    """Typed events numbered in order."""

    def __init__(self) -> None:
        self.sequence = 0

    def __call__(self, kind: str, **payload: Any) -> str:
        data = {"type": kind, "sequence_number": self.sequence, **payload}
        self.sequence += 1
        return f"event: {kind}\ndata: {json.dumps(data)}\n\n"


async def _stream(state, req, head, run, prompt_len: int) -> AsyncIterator[str]:
    ev, outcome, item_id = _Events(), ChatOutcome(prompt_tokens=prompt_len), new_id("msg")
    yield ev("response.created", response=_envelope(state, req, head))
    yield ev("response.in_progress", response=_envelope(state, req, head))
    at = {"item_id": item_id, "output_index": 0, "content_index": 0}
    item = message_item(item_id, None, "in_progress")
    yield ev("response.output_item.added", output_index=0, item=item)
    yield ev("response.content_part.added", **at, part=text_part(""))
    async for chunk in chat_run.chunks(run):
        if isinstance(chunk, Failed):
            error = error_body(chunk.status, chunk.message)["error"]
            yield ev("error", code=error["type"], message=chunk.message, param=None)
            failed = {"code": "server_error", "message": chunk.message}
            yield ev(
                "response.failed",
                response=_envelope(state, req, head, status="failed", error=failed),
            )
            return
        chat_run.add_chunk(outcome, chunk)
        if chunk.text:
            yield ev("response.output_text.delta", **at, delta=chunk.text, logprobs=[])
    yield ev("response.output_text.done", **at, text=outcome.content, logprobs=[])
    yield ev("response.content_part.done", **at, part=text_part(outcome.content))
    final = _final(state, req, head, outcome, lambda p: item_id if p == "msg" else new_id(p))
    done = message_item(item_id, outcome.content, final["status"])
    yield ev("response.output_item.done", output_index=0, item=done)
    kind = "response.completed" if final["status"] == "completed" else "response.incomplete"
    yield ev(kind, response=final)
