"""``POST /v1/messages`` (streamed or not) and ``POST /v1/messages/count_tokens``.

Each request becomes a chat request (:mod:`.mapping`) and runs on the chat path
(:mod:`mlx_gen.server.chat_run`). A stream sends Anthropic's events in order:
``message_start``, ``ping``, the content blocks (:mod:`.stream`), then
``message_delta`` (``stop_reason``, ``stop_sequence``, the final ``usage``) and
``message_stop``; a failure mid-stream is an ``error`` event. With mlx_gen's ``logprobs``
extension the reply gets the chat endpoint's ``logprobs`` (``{"content": [...]}``), and
a stream sends the same entries on its deltas (:mod:`.stream`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.responses import StreamingResponse

from mlx_gen.server import chat_run
from mlx_gen.server.chat_features import unsupported
from mlx_gen.server.chat_run import ChatOutcome, Started
from mlx_gen.server.errors import ApiError
from mlx_gen.server.extensions import chat_request, extensions, renamed
from mlx_gen.server.jobs import Failed
from mlx_gen.server.messages_api.errors import anthropic_error
from mlx_gen.server.messages_api.mapping import FIELD_NAMES, content_blocks, stop_fields, to_chat
from mlx_gen.server.messages_api.schemas import IGNORED, CountTokensRequest, MessagesRequest
from mlx_gen.server.messages_api.stream import BlockWriter, event
from mlx_gen.server.schemas import ChatRequest
from mlx_gen.server.state import ServerState
from mlx_gen.server.streaming import new_id


def _chat(state: ServerState, req: CountTokensRequest) -> ChatRequest:
    """The chat request for ``req``, or a 400 naming the Anthropic field at fault."""
    state.check_model(req.model)
    extra = extensions(req.model_extra, strict=state.strict, ignored=IGNORED)
    body = to_chat(req, extra)
    feature = unsupported(body)
    if feature is not None:
        name = FIELD_NAMES[feature]
        raise ApiError(400, f"{name}: not supported yet by this server", param=name)
    return chat_request(body, FIELD_NAMES)


async def count_tokens(state: ServerState, req: CountTokensRequest) -> dict:
    """``{"input_tokens": N}``: the length of the prompt the chat endpoint would build."""
    try:
        ids = await chat_run.prompt_ids(state, _chat(state, req))
    except ApiError as err:
        raise renamed(err, FIELD_NAMES) from None
    return {"input_tokens": len(ids)}


def _message(state: ServerState, msg_id: str, outcome: ChatOutcome, content: list) -> dict:
    stop_reason, stop_sequence = stop_fields(outcome) if content else (None, None)
    return {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": state.name,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage(outcome),
    }


def usage(outcome: ChatOutcome) -> dict:
    """Anthropic's ``usage``: ``input_tokens`` are the prompt tokens not read from the prefix
    cache, ``cache_read_input_tokens`` those that were (their sum is the prompt's length, as
    ``count_tokens`` says); nothing is counted as a cache write (the cache needs no markers)."""
    return {
        "input_tokens": outcome.prompt_tokens - outcome.cached_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": outcome.cached_tokens,
        "output_tokens": len(outcome.token_ids),
    }


async def create_message(state: ServerState, req: MessagesRequest, request: Request):
    """Answer ``req``: a ``message`` object, or Anthropic's event stream."""
    chat = _chat(state, req)
    try:
        started = await chat_run.start(state, chat)
    except ApiError as err:
        raise renamed(err, FIELD_NAMES) from None
    msg_id = new_id("msg")
    if req.stream:
        events = _stream(state, msg_id, started)
        return StreamingResponse(events, media_type="text/event-stream")
    outcome = await chat_run.collect(started, request)
    message = _message(state, msg_id, outcome, content_blocks(outcome))
    if chat.logprobs:
        message["logprobs"] = {"content": outcome.logprobs}
    if chat.return_token_ids:
        message["token_ids"] = outcome.token_ids
    return message


async def _stream(state: ServerState, msg_id: str, started: Started) -> AsyncIterator[str]:
    outcome, blocks = ChatOutcome(prompt_tokens=started.prompt_len), BlockWriter()
    yield event("message_start", {"message": _message(state, msg_id, outcome, [])})
    yield event("ping", {})
    seen = 0
    async for pieces in chat_run.pieces(started, outcome):
        if isinstance(pieces, Failed):
            yield event("error", anthropic_error(pieces.status, pieces.message))
            return
        fresh, seen = outcome.logprobs[seen:], len(outcome.logprobs)
        for line in blocks.write(pieces, fresh):
            yield line
    blocks.write([], outcome.logprobs[seen:])  # entries after the last pieces
    for line in blocks.finish():
        yield line
    stop_reason, stop_sequence = stop_fields(outcome)
    delta = {
        "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
        "usage": usage(outcome),
    }
    if started.entry is not None:  # logprobs asked: those no content delta carried
        delta["logprobs"] = blocks.unsent()
    yield event("message_delta", delta)
    yield event("message_stop", {})
