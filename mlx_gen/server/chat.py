"""``POST /v1/chat/completions``: messages through the chat template, streamed or not."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from mlx_gen.no_allowed_token import NO_TOKEN
from mlx_gen.server.bridge import ChoiceSpec, ClientGone, RequestRun
from mlx_gen.server.chat_tools import (
    apply_template,
    chat_plan,
    delta_of,
    finish_reason,
    message_dict,
    message_of,
)
from mlx_gen.server.errors import ApiError
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
from mlx_gen.server.schemas import ChatRequest, Message
from mlx_gen.server.settings_map import (
    base_settings,
    check_prompt_chars,
    choice_settings,
    max_tokens,
)
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
from mlx_gen.server.worker import Failed
from mlx_gen.settings import GenerationSettings
from mlx_gen.stream import GenerationChunk
from mlx_gen.tools import ChatPlan, OutputParser


def _content(message: Message, index: int) -> str:
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    parts = []
    for part in message.content:
        if part.type != "text" or part.text is None:
            raise ApiError(
                400,
                f"messages[{index}].content: part type {part.type!r} is not supported "
                "(only 'text')",
                param=f"messages[{index}].content",
            )
        parts.append(part.text)
    return "".join(parts)


def _messages(req: ChatRequest) -> list[dict]:
    return [
        message_dict(m.role, None if m.content is None else _content(m, i), m.model_dump())
        for i, m in enumerate(req.messages)
    ]


def _plan(state: ServerState, req: ChatRequest, base: GenerationSettings | None) -> Any:
    messages = _messages(req)
    chars = sum(len(m.get("content") or "") for m in messages)
    check_prompt_chars(chars, state.limits, "messages")  # before rendering and tokenizing
    try:
        if base is None:  # /apply-template
            return apply_template(state.model.tokenizer, req, messages)
        return chat_plan(state.model.tokenizer, req, messages, base)
    except ApiError:
        raise
    except Exception as err:  # noqa: BLE001 - a template error is the request's fault
        raise ApiError(400, f"messages: {err}", param="messages") from err


def _specs(state: ServerState, req: ChatRequest) -> tuple[list[ChoiceSpec], ChatPlan]:
    """The choices to run and the chat plan (run off the event loop: it renders the
    template and compiles the tool grammar)."""
    if req.top_logprobs is not None and not req.logprobs:
        raise ApiError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
    if req.n > state.limits.max_choices:
        raise ApiError(
            400,
            f"n={req.n} is more than the server's limit ({state.limits.max_choices})",
            param="n",
        )
    top = (req.top_logprobs or 0) if req.logprobs else None
    base = base_settings(req, state.model, top_logprobs=top, response_format=req.response_format)
    plan = _plan(state, req, base)
    ids, base = plan.prompt_ids, plan.settings
    param = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
    requested = (
        req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    )
    limit = max_tokens(
        requested, len(ids), state.model, state.limits, param, prompt_param="messages"
    )
    specs = [
        ChoiceSpec(ids, choice_settings(base, seed=req.seed, choice=i, max_tokens=limit))
        for i in range(req.n)
    ]
    return specs, plan


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


async def apply_chat_template(state: ServerState, req: ChatRequest) -> dict:
    """``POST /apply-template``: the rendered prompt of a chat request (off the event loop)."""
    state.check_model(req.model)
    state.check_fields(req)
    return await run_in_threadpool(_plan, state, req, None)


async def chat_completions(state: ServerState, req: ChatRequest, request: Request):
    """Answer a chat request (a JSON body, or an SSE stream when ``stream`` is true)."""
    state.check_model(req.model)
    state.check_fields(req)
    specs, plan = await run_in_threadpool(_specs, state, req)  # Template, tokenizer: off the loop.
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


# The chat path as the other chat-style surfaces (/v1/messages, /v1/responses) use it:
# one definition of the prompt and the choices.


def chat_prompt_ids(state: ServerState, req: ChatRequest) -> list[int]:
    """The prompt ids of ``req``, as the chat endpoint builds them (tools included;
    renders and tokenizes: call it off the event loop).

    Raises:
        ApiError: 400 naming the invalid field, or for a template error.
    """
    return _specs(state, req)[0][0].prompt_ids


def chat_specs(state: ServerState, req: ChatRequest) -> tuple[list[ChoiceSpec], ChatPlan]:
    """``req``'s choices (prompt ids and checked settings) and its chat plan (tool grammar,
    output parser), as the chat endpoint runs them (renders, tokenizes and compiles: call
    it off the event loop).

    Raises:
        ApiError: 400 naming the invalid field.
    """
    return _specs(state, req)
