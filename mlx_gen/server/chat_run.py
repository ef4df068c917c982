"""The one internal path of every chat-style surface: a chat request in, chat output out.

``/v1/messages`` and ``/v1/responses`` translate their requests into a
:class:`~mlx_gen.server.schemas.ChatRequest` (their ``mapping`` modules), then run it
here exactly as ``/v1/chat/completions`` would (:func:`~mlx_gen.server.chat.chat_specs`,
one :class:`~mlx_gen.server.bridge.RequestRun` on the shared worker), so for the same
prompt, settings and seed all three return the same tokens. Prompt rendering and
tokenizing run in a worker thread, never on the event loop.

The output is chat's message as data (:class:`ChatOutcome`: ``content``, ``reasoning``,
``tool_calls``), built from the pieces the chat plan's output parser reads from the text
(:class:`TextPiece`, :class:`ReasoningPiece`, :class:`CallStart`, :class:`CallArguments`:
the tool-calling parser's own piece types, :mod:`mlx_gen.tools`); streams send the same
pieces as they come.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from mlx_gen.no_allowed_token import NO_TOKEN
from mlx_gen.server.bridge import ClientGone, RequestRun
from mlx_gen.server.chat_request import chat_prompt_ids, chat_specs
from mlx_gen.server.errors import ApiError
from mlx_gen.server.jobs import Failed
from mlx_gen.server.logprob_format import chat_entry
from mlx_gen.server.schemas import ChatRequest
from mlx_gen.server.state import ServerState
from mlx_gen.stream import GenerationChunk
from mlx_gen.tools import (
    ContentDelta,
    OutputParser,
    ReasoningDelta,
    StreamPiece,
    ToolCallArguments,
    ToolCallStart,
)

# The chat plan's parser (:class:`~mlx_gen.tools.OutputParser`) yields these pieces; the
# names below are what the surfaces' stream writers call them.
TextPiece = ContentDelta
ReasoningPiece = ReasoningDelta
CallStart = ToolCallStart
CallArguments = ToolCallArguments
Piece = StreamPiece


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
        reasoning: The reasoning text (``None``: the answer had no think block).
        tool_calls: Chat-style tool calls (``{"id", "type": "function", "function":
            {"name", "arguments"}}``); once collected, only the complete ones.
        logprobs: With ``logprobs``, each generated token's chat logprob entry (``token``,
            ``logprob``, ``bytes``, ``top_logprobs``, ...), in order.
        cached_tokens: Prompt tokens served from the prefix cache (the chat endpoint's
            ``usage.prompt_tokens_details.cached_tokens``); known once the prompt is read.
        reasoning_tokens: Generated tokens after which the answer was still inside its
            reasoning block (the block's markers excluded: with ``thinking_budget`` N and
            a model that would think longer, exactly N).
    """

    content: str = ""
    token_ids: list[int] = field(default_factory=list)
    finish: str = "length"
    matched: int | str | None = None
    prompt_tokens: int = 0
    reasoning: str | None = None
    tool_calls: list[dict] = field(default_factory=list)
    logprobs: list[dict] = field(default_factory=list)
    cached_tokens: int = 0
    reasoning_tokens: int = 0


async def prompt_ids(state: ServerState, req: ChatRequest) -> list[int]:
    """The ids the chat endpoint would prompt with for ``req`` (rendered off the loop)."""
    return await run_in_threadpool(chat_prompt_ids, state, req)


@dataclass
class Started:
    """A submitted request: its run, prompt length, output parser and logprob entries
    (``entry``: a chunk's chat logprob entry, ``None`` without ``logprobs``)."""

    run: RequestRun
    prompt_len: int
    parser: OutputParser
    entry: Callable[[GenerationChunk], dict] | None = None

    def add(self, outcome: ChatOutcome, chunk: GenerationChunk) -> list[Piece]:
        """Fold ``chunk`` into ``outcome`` and return its new pieces."""
        add_chunk(outcome, chunk)
        if self.entry is not None and chunk.logprobs:
            outcome.logprobs.append(self.entry(chunk))
        new = self.parser.feed(chunk.text)
        add_pieces(outcome, new)
        if chunk.token != NO_TOKEN and self.parser.state == "reasoning":
            outcome.reasoning_tokens += 1
        outcome.cached_tokens = self.run.cached_tokens()  # set once its prompt was read
        return new


async def start(state: ServerState, req: ChatRequest) -> Started:
    """Submit ``req`` (one choice) to the worker; returns once it is admitted.

    Raises:
        ApiError: 400 for an invalid request, 429 when the queue is full.
    """
    specs, plan = await run_in_threadpool(chat_specs, state, req)
    run = RequestRun(state.worker, specs, state.limits.max_unread_events)
    await run.admitted()
    entry = None
    if req.logprobs:
        modes = ("raw", "processed") if req.logprobs_mode == "both" else (req.logprobs_mode,)

        def entry(chunk: GenerationChunk) -> dict:
            return chat_entry(state.texts, chunk.logprobs, modes).model_dump(exclude_none=True)

    return Started(run, len(specs[0].prompt_ids), plan.parser(), entry)


def add_chunk(outcome: ChatOutcome, chunk: GenerationChunk) -> None:
    """Fold one generated token's id and finish reason into ``outcome`` (a last chunk
    that generated nothing, ``NO_TOKEN``, adds no id: as in ``mlx_gen.generate``)."""
    if chunk.token != NO_TOKEN:
        outcome.token_ids.append(chunk.token)
    if chunk.finish_reason is not None:
        outcome.finish, outcome.matched = chunk.finish_reason, chunk.matched


def add_pieces(outcome: ChatOutcome, pieces: list[Piece]) -> None:
    """Fold parsed pieces into ``outcome``'s content, reasoning and tool calls."""
    for piece in pieces:
        if isinstance(piece, TextPiece):
            outcome.content += piece.text
        elif isinstance(piece, ReasoningPiece):
            outcome.reasoning = (outcome.reasoning or "") + piece.text
        elif isinstance(piece, CallStart):
            function = {"name": piece.name, "arguments": ""}
            outcome.tool_calls.append({"id": piece.id, "type": "function", "function": function})
        else:
            outcome.tool_calls[piece.index]["function"]["arguments"] += piece.fragment


async def collect(started: Started, request: Request) -> ChatOutcome:
    """Wait for the whole answer (cancelled when the client disconnects).

    Its tool calls are the complete ones, as in the chat endpoint's message (one cut short
    by ``max_tokens`` is dropped; a stream has sent its start, :func:`pieces`); its content
    is the text as streamed.

    Raises:
        ApiError: The job's failure, or 400 when the client went away.
    """
    outcome, run = ChatOutcome(prompt_tokens=started.prompt_len), started.run
    try:
        async for _, event in run.events(request):
            if isinstance(event, Failed):
                run.cancel()
                raise ApiError(event.status, event.message)
            if isinstance(event, GenerationChunk):
                started.add(outcome, event)
    except ClientGone:
        run.cancel()
        raise ApiError(400, "the client disconnected") from None
    finally:
        run.close()  # Its places in the queue are free once the answer is built.
    add_pieces(outcome, started.parser.finish())
    # Only complete calls (as the chat endpoint's message): one cut by max_tokens is none.
    outcome.tool_calls = [call.to_openai() for call in started.parser.result().tool_calls]
    return outcome


async def pieces(started: Started, outcome: ChatOutcome) -> AsyncIterator[list[Piece] | Failed]:
    """The answer's pieces as they come (folded into ``outcome`` too), or its failure.

    The run is cancelled when the iteration stops early (the client went away).
    """
    finished = False
    try:
        async for _, event in started.run.events():
            if isinstance(event, Failed):
                yield event
                return
            if isinstance(event, GenerationChunk):
                new = started.add(outcome, event)
                if event.finish_reason is not None:
                    tail, finished = started.parser.finish(), True
                    add_pieces(outcome, tail)
                    new = new + tail
                if new:
                    yield new
        tail = [] if finished else started.parser.finish()
        add_pieces(outcome, tail)
        if tail:
            yield tail
    finally:
        started.run.close()  # Sent or abandoned: cancel what runs, free its places.
