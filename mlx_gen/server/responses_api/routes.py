"""``POST /v1/responses`` (stateless), streamed or not.

The request becomes a chat request (:mod:`.mapping`) and runs on the chat path
(:mod:`mlx_gen.server.chat_run`). A stream sends the typed events in order, each with
its ``sequence_number``: ``response.created``, ``response.in_progress``, the output
items' events (:mod:`.stream`), then ``response.completed`` (or ``response.incomplete``
at ``max_output_tokens``); a failure mid-stream is an ``error`` event followed by
``response.failed``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

from mlx_gen.server import chat_run
from mlx_gen.server.chat_features import unsupported
from mlx_gen.server.chat_run import ChatOutcome, Started
from mlx_gen.server.errors import ApiError, error_body
from mlx_gen.server.extensions import chat_request, extensions, renamed
from mlx_gen.server.jobs import Failed
from mlx_gen.server.responses_api.mapping import (
    FIELD_NAMES,
    incomplete,
    output_items,
    response_logprobs,
    to_chat,
)
from mlx_gen.server.responses_api.schemas import IGNORED, ResponsesRequest
from mlx_gen.server.responses_api.stream import Events, ItemWriter
from mlx_gen.server.state import ServerState
from mlx_gen.server.streaming import new_id, now


def envelope(state: ServerState, req: ResponsesRequest, head: dict, **fields: Any) -> dict:
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
        "parallel_tool_calls": req.parallel_tool_calls is not False,
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
    """``usage``: ``cached_tokens`` (part of ``input_tokens``) came from the prefix cache;
    ``reasoning_tokens`` (part of ``output_tokens``) were generated inside the think block."""
    out = len(outcome.token_ids)
    return {
        "input_tokens": outcome.prompt_tokens,
        "input_tokens_details": {"cached_tokens": outcome.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": out,
        "output_tokens_details": {"reasoning_tokens": outcome.reasoning_tokens},
        "total_tokens": outcome.prompt_tokens + out,
    }


def final_response(state, req, head, outcome: ChatOutcome, output: list[dict]) -> dict:
    """The finished response with ``output`` (its last item takes the status)."""
    details = incomplete(outcome)
    status = "completed" if details is None else "incomplete"
    output[-1]["status"] = status  # the item the limit cut
    return envelope(
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
        started = await chat_run.start(state, chat)
    except ApiError as err:
        raise renamed(err, FIELD_NAMES) from None
    head = {"id": new_id("resp"), "created_at": now()}
    if req.stream:
        return StreamingResponse(_stream(state, req, head, started), media_type="text/event-stream")
    outcome = await chat_run.collect(started, request)
    response = final_response(state, req, head, outcome, output_items(outcome, new_id))
    if chat.return_token_ids:
        response["token_ids"] = outcome.token_ids
    return response


async def _stream(state, req, head, started: Started) -> AsyncIterator[str]:
    ev, outcome = Events(), ChatOutcome(prompt_tokens=started.prompt_len)
    items, seen = ItemWriter(ev, new_id), 0
    yield ev("response.created", response=envelope(state, req, head))
    yield ev("response.in_progress", response=envelope(state, req, head))
    async for pieces in chat_run.pieces(started, outcome):
        if isinstance(pieces, Failed):
            error = error_body(pieces.status, pieces.message)["error"]
            yield ev("error", code=error["type"], message=pieces.message, param=None)
            failed = {"code": "server_error", "message": pieces.message}
            failure = envelope(state, req, head, status="failed", error=failed)
            yield ev("response.failed", response=failure)
            return
        fresh, seen = response_logprobs(outcome.logprobs[seen:]), len(outcome.logprobs)
        for line in items.write(pieces, fresh):
            yield line
    items.write([], response_logprobs(outcome.logprobs[seen:]))
    status = "completed" if incomplete(outcome) is None else "incomplete"
    for line in items.finish(status):
        yield line
    final = final_response(state, req, head, outcome, items.items)
    yield ev(f"response.{status}", response=final)
