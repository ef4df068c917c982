"""``POST /v1/chat/completions``: messages through the chat template, streamed or not."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from mlx_gen.no_allowed_token import NO_TOKEN
from mlx_gen.server.bridge import ClientGone, RequestRun
from mlx_gen.server.chat_request import chat_specs
from mlx_gen.server.chat_tools import (
    delta_of,
    finish_reason,
    message_of,
)
from mlx_gen.server.errors import ApiError
from mlx_gen.server.jobs import Failed
from mlx_gen.server.logprob_format import chat_entry
from mlx_gen.server.responses import (
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChoiceLogprobs,
    ChunkChoice,
    Delta,
    LogprobEntry,
    PromptTokensDetails,
    Usage,
)
from mlx_gen.server.schemas import ChatRequest
from mlx_gen.server.state import ServerState
from mlx_gen.server.streaming import (
    DONE,
    finish_fields,
    json_response,
    new_id,
    now,
    sse,
    sse_error,
)
from mlx_gen.stream import GenerationChunk
from mlx_gen.tools import ChatPlan, OutputParser


@dataclass
class _Choice:
    parser: OutputParser
    text: list[str] = field(default_factory=list)
    entries: list[LogprobEntry] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    last: GenerationChunk | None = None


def _ids(chunk: GenerationChunk) -> list[int]:
    """The id ``chunk`` generated: none on a last chunk that generated nothing (NO_TOKEN)."""
    return [] if chunk.token == NO_TOKEN else [chunk.token]


def _entries(state: ServerState, req: ChatRequest, chunk: GenerationChunk) -> list[LogprobEntry]:
    if not chunk.logprobs:
        return []
    modes = ("raw", "processed") if req.logprobs_mode == "both" else (req.logprobs_mode,)
    return [chat_entry(state.texts, chunk.logprobs, modes)]


async def chat_completions(state: ServerState, req: ChatRequest, request: Request):
    """Answer a chat request (a JSON body, or an SSE stream when ``stream`` is true)."""
    state.check_model(req.model)
    state.check_fields(req)
    specs, plan = await run_in_threadpool(
        chat_specs, state, req
    )  # Template, tokenizer: off the loop.
    run = RequestRun(state.worker, specs, state.limits.max_unread_events)
    await run.admitted()
    if req.stream:
        return StreamingResponse(
            _stream(state, req, run, len(specs[0].prompt_ids), plan),
            media_type="text/event-stream",
        )
    choices = [_Choice(plan.parser()) for _ in specs]
    try:
        async for index, event in run.events(request):
            if isinstance(event, Failed):
                run.cancel()
                raise ApiError(event.status, event.message)
            if isinstance(event, GenerationChunk):
                choice = choices[index]
                choice.text.append(event.text)
                choice.entries += _entries(state, req, event)
                choice.ids += _ids(event)
                choice.last = event
    except ClientGone:
        run.cancel()
        raise ApiError(400, "the client disconnected") from None
    finally:
        run.close()  # Its places in the queue are free once the answer is built.
    prompt_len = len(specs[0].prompt_ids)
    cached = run.cached_tokens(req.n)
    return await run_in_threadpool(
        json_response, _response, state, req, choices, prompt_len, cached
    )


def _response(
    state: ServerState, req: ChatRequest, choices: list[_Choice], prompt_len: int, cached: int
):
    out = []
    for i, c in enumerate(choices):
        reason, stop_reason = finish_fields(c.last)
        logprobs = ChoiceLogprobs(content=c.entries) if c.entries or req.logprobs else None
        c.parser.feed("".join(c.text))
        c.parser.finish()
        parsed = c.parser.result()
        out.append(
            ChatChoice(
                index=i,
                message=message_of(parsed),
                logprobs=logprobs,
                finish_reason=finish_reason(reason, parsed),
                stop_reason=stop_reason,
                token_ids=c.ids if req.return_token_ids else None,
            )
        )
    completion = sum(len(c.ids) for c in choices)
    return ChatCompletion(
        id=new_id("chatcmpl"),
        created=now(),
        model=state.name,
        choices=out,
        usage=Usage(
            prompt_tokens=prompt_len,
            completion_tokens=completion,
            total_tokens=prompt_len + completion,
            prompt_tokens_details=PromptTokensDetails(cached_tokens=cached),
        ),
    )


def _piece(
    state: ServerState, req: ChatRequest, index: int, event: GenerationChunk, parser: OutputParser
):
    """A streamed choice for one token, or ``None`` when it has nothing to say yet."""
    entries = _entries(state, req, event)
    reason, stop_reason = finish_fields(event) if event.finish_reason else (None, None)
    pieces = parser.feed(event.text)
    if reason is not None:
        pieces += parser.finish()
        reason = finish_reason(reason, parser.result())
    delta = delta_of(pieces)
    if delta is None and not entries and reason is None and not req.return_token_ids:
        return None  # Held back (a stop string, a partial character or marker).
    return ChunkChoice(
        index=index,
        delta=delta or Delta(content=""),
        logprobs=ChoiceLogprobs(content=entries) if entries else None,
        finish_reason=reason,
        stop_reason=stop_reason,
        token_ids=_ids(event) if req.return_token_ids else None,
    )


async def _stream(
    state: ServerState, req: ChatRequest, run: RequestRun, prompt_len: int, plan: ChatPlan
) -> AsyncIterator[str]:
    head = {"id": new_id("chatcmpl"), "created": now(), "model": state.name}
    parsers = [plan.parser() for _ in run.jobs]
    counts, finished = [0] * len(run.jobs), [False] * len(run.jobs)
    try:
        opening = [
            ChunkChoice(index=i, delta=Delta(role="assistant", content=""))
            for i in range(len(run.jobs))
        ]
        yield sse(ChatCompletionChunk(**head, choices=opening))
        async for index, event in run.events():
            if isinstance(event, Failed):
                yield sse_error(event.status, event.message)
                continue
            if not isinstance(event, GenerationChunk):  # Done
                if not finished[index]:  # Nothing generated (max_tokens=0): say so.
                    finished[index] = True
                    last = ChunkChoice(index=index, delta=Delta(), finish_reason="length")
                    yield sse(ChatCompletionChunk(**head, choices=[last]))
                continue
            counts[index] += len(_ids(event))
            finished[index] = event.finish_reason is not None
            piece = _piece(state, req, index, event, parsers[index])
            if piece is not None:
                yield sse(ChatCompletionChunk(**head, choices=[piece]))
        if req.stream_options is not None and req.stream_options.include_usage:
            total = sum(counts)
            usage = Usage(
                prompt_tokens=prompt_len,
                completion_tokens=total,
                total_tokens=prompt_len + total,
                prompt_tokens_details=PromptTokensDetails(cached_tokens=run.cached_tokens(req.n)),
            )
            yield sse(ChatCompletionChunk(**head, choices=[], usage=usage))
        yield DONE
    finally:
        run.close()  # Sent or abandoned: cancel what runs, free its places in the queue.
