"""The one internal path of every chat-style surface: a chat request in, chat output out.

``/v1/messages`` and ``/v1/responses`` translate their requests into a
:class:`~mlx_gen.server.schemas.ChatRequest` (their ``mapping`` modules), then run it
here exactly as ``/v1/chat/completions`` would (:func:`~mlx_gen.server.chat.chat_specs`,
one :class:`~mlx_gen.server.bridge.RequestRun` on the shared worker), so for the same
prompt, settings and seed all three return the same tokens. Prompt rendering and
tokenizing run in a worker thread, never on the event loop.

The output is chat's message as data (:class:`ChatOutcome`: ``content``, and the
``reasoning`` / ``tool_calls`` that the tool-calling work fills), so each surface only
maps that shape to its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from mlx_gen.server.bridge import ClientGone, RequestRun
from mlx_gen.server.chat import chat_prompt_ids, chat_specs
from mlx_gen.server.errors import ApiError
from mlx_gen.server.schemas import ChatRequest
from mlx_gen.server.state import ServerState
from mlx_gen.server.worker import Failed
from mlx_gen.stream import GenerationChunk


@dataclass
class ChatOutcome:
    """One finished chat-style generation (choice 0).

    Attributes:
        content: The assistant's text.
        token_ids: The generated ids.
        finish: The engine's finish reason (``"stop"`` for EOS, ``"stop_string"``,
            ``"length"``, ``"constraint"``, ...); ``"length"`` when nothing was generated.
        matched: The stop string or EOS id that ended it, if one did.
        prompt_tokens: The prompt's length in tokens.
        reasoning: The reasoning text (``None`` until the chat path produces it).
        tool_calls: Chat-style tool calls (``{"id", "type": "function", "function":
            {"name", "arguments"}}``), empty until the chat path produces them.
    """

    content: str = ""
    token_ids: list[int] = field(default_factory=list)
    finish: str = "length"
    matched: int | str | None = None
    prompt_tokens: int = 0
    reasoning: str | None = None
    tool_calls: list[dict] = field(default_factory=list)


async def prompt_ids(state: ServerState, req: ChatRequest) -> list[int]:
    """The ids the chat endpoint would prompt with for ``req`` (rendered off the loop)."""
    return await run_in_threadpool(chat_prompt_ids, state, req)


async def start(state: ServerState, req: ChatRequest) -> tuple[RequestRun, int]:
    """Submit ``req`` (one choice) to the worker; ``(run, prompt length)`` once admitted.

    Raises:
        ApiError: 400 for an invalid request, 429 when the queue is full.
    """
    specs = await run_in_threadpool(chat_specs, state, req)
    run = RequestRun(state.worker, specs)
    await run.admitted()
    return run, len(specs[0].prompt_ids)


def add_chunk(outcome: ChatOutcome, chunk: GenerationChunk) -> None:
    """Fold one generated token's chunk into ``outcome``."""
    outcome.content += chunk.text
    outcome.token_ids.append(chunk.token)
    if chunk.finish_reason is not None:
        outcome.finish, outcome.matched = chunk.finish_reason, chunk.matched


async def collect(run: RequestRun, prompt_len: int, request: Request) -> ChatOutcome:
    """Wait for the whole answer (cancelled when the client disconnects).

    Raises:
        ApiError: The job's failure, or 400 when the client went away.
    """
    outcome = ChatOutcome(prompt_tokens=prompt_len)
    try:
        async for _, event in run.events(request):
            if isinstance(event, Failed):
                run.cancel()
                raise ApiError(event.status, event.message)
            if isinstance(event, GenerationChunk):
                add_chunk(outcome, event)
    except ClientGone:
        run.cancel()
        raise ApiError(400, "the client disconnected") from None
    return outcome


async def chunks(run: RequestRun) -> AsyncIterator[GenerationChunk | Failed]:
    """The run's chunks as they come, then its failure if it failed (cancels on exit)."""
    try:
        async for _, event in run.events():
            if isinstance(event, (GenerationChunk, Failed)):
                yield event
    finally:
        run.cancel()
