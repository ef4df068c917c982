"""``POST /v1/completions``: text or token-id prompts, ``echo``, legacy logprobs.

``prompt`` is a string, a list of strings, a list of ids or a list of id lists; choice
``p * n + j`` is prompt ``p``'s ``j``-th sample. With ``echo`` the prompt text comes
first; with ``echo`` and ``logprobs`` the prompt tokens' teacher-forced raw logprobs
come first too (the first token's is ``null``), so a harness can read log-likelihoods.
``token_logprobs`` and the ``top_logprobs`` entry of the same token are the same float.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from mlx_gen.no_allowed_token import NO_TOKEN
from mlx_gen.server.bridge import ChoiceSpec, ClientGone, RequestRun
from mlx_gen.server.errors import ApiError
from mlx_gen.server.jobs import Failed, PromptScores
from mlx_gen.server.logprob_format import legacy_entry, legacy_logprobs
from mlx_gen.server.responses import Completion, CompletionChoice, PromptTokensDetails, Usage
from mlx_gen.server.schemas import CompletionRequest
from mlx_gen.server.settings_map import (
    base_settings,
    check_context,
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
from mlx_gen.stream import GenerationChunk


def _prompts(state: ServerState, prompt: object) -> list[tuple[list[int], str]]:
    """``(ids, text)`` per prompt; ids are checked against the vocabulary."""
    tok, vocab = state.model.tokenizer, state.model.vocab_size
    if isinstance(prompt, str):
        items: list = [prompt]
    elif prompt and isinstance(prompt[0], int):  # strict types: then every item is an int
        items = [list(prompt)]
    else:
        items = list(prompt)
    if not items:
        raise ApiError(400, "prompt is empty: pass text or token ids", param="prompt")
    chars = sum(len(item) for item in items if isinstance(item, str))
    check_prompt_chars(chars, state.limits, "prompt")
    out = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            ids = list(tok.encode(item, add_special_tokens=True)) if item else []
            text = item
        else:
            check_context(len(item), state.model)  # before decoding millions of ids
            bad = [t for t in item if not 0 <= t < vocab]
            if bad:
                raise ApiError(
                    400,
                    f"prompt[{i}]: ids {bad} are outside the vocabulary (0..{vocab - 1})",
                    param="prompt",
                )
            ids, text = list(item), tok.decode(list(item))
        if not ids:
            raise ApiError(400, f"prompt[{i}] is empty: pass text or token ids", param="prompt")
        out.append((ids, text))
    return out


def _specs(state: ServerState, req: CompletionRequest, prompts: list) -> list[ChoiceSpec]:
    if req.suffix:
        raise ApiError(400, "suffix is not supported (no fill-in-the-middle)", param="suffix")
    if req.best_of is not None and req.best_of != req.n:
        raise ApiError(400, "best_of is not supported (only best_of == n)", param="best_of")
    if req.n * len(prompts) > state.limits.max_choices:
        raise ApiError(
            400,
            f"n={req.n} x {len(prompts)} prompts is more than the server's limit "
            f"({state.limits.max_choices} choices)",
            param="n",
        )
    base = base_settings(
        req, state.model, top_logprobs=req.logprobs, response_format=req.response_format
    )
    base = dataclasses.replace(base, speculative=state.speculation.drafter(req.speculative))
    prompt_logprobs = req.logprobs if req.echo and req.logprobs is not None else None
    specs = []
    for ids, _ in prompts:
        limit = max_tokens(req.max_tokens, len(ids), state.model, state.limits, "max_tokens")
        for j in range(req.n):
            settings = choice_settings(base, seed=req.seed, choice=j, max_tokens=limit)
            specs.append(ChoiceSpec(ids, settings, prompt_logprobs))
    return specs


def _prepare(state: ServerState, req: CompletionRequest) -> tuple[list, list[ChoiceSpec]]:
    """The prompts and the choices' specs (tokenizes: run it in a thread)."""
    prompts = _prompts(state, req.prompt)
    return prompts, _specs(state, req, prompts)


@dataclass
class _Choice:
    prompt_ids: list[int]
    prompt_text: str
    text: list[str] = field(default_factory=list)
    entries: list[tuple] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    last: GenerationChunk | None = None
    offset: int = 0


def _prompt_entries(state: ServerState, choice: _Choice, scores: PromptScores, top: int) -> list:
    ids = choice.prompt_ids
    first = legacy_entry(state.texts, None, ids[0], top)
    return [first] + [
        legacy_entry(state.texts, r, t, top) for r, t in zip(scores.reports, ids[1:], strict=True)
    ]


def _token_entry(state: ServerState, req: CompletionRequest, chunk: GenerationChunk) -> tuple:
    mode = "processed" if req.logprobs_mode == "processed" else "raw"
    return legacy_entry(state.texts, chunk.logprobs.get(mode), chunk.token, req.logprobs or 0)


async def completions(state: ServerState, req: CompletionRequest, request: Request):
    """Answer a completions request (JSON, or SSE when ``stream`` is true)."""
    state.check_model(req.model)
    state.check_fields(req)
    prompts, specs = await run_in_threadpool(_prepare, state, req)  # Tokenizing: off the loop.
    run = RequestRun(state.worker, specs, state.limits.max_unread_events)
    await run.admitted()
    choices = [_Choice(s.prompt_ids, prompts[i // req.n][1]) for i, s in enumerate(specs)]
    for c in choices:
        c.offset = 0 if req.echo else len(c.prompt_text)
    prompt_len = sum(len(ids) for ids, _ in prompts)
    if req.stream:
        return StreamingResponse(
            _stream(state, req, run, choices, prompt_len), media_type="text/event-stream"
        )
    try:
        async for index, event in run.events(request):
            _collect(state, req, choices[index], event, run)
    except ClientGone:
        run.cancel()
        raise ApiError(400, "the client disconnected") from None
    finally:
        run.close()  # Its places in the queue are free once the answer is built.
    cached = run.cached_tokens(req.n)
    return await run_in_threadpool(
        json_response, _completion, state, req, choices, prompt_len, cached
    )


def _completion(
    state: ServerState,
    req: CompletionRequest,
    choices: list[_Choice],
    prompt_len: int,
    cached: int,
) -> Completion:
    out = [_choice(req, i, c, final=True) for i, c in enumerate(choices)]
    completion = sum(len(c.ids) for c in choices)
    return Completion(
        id=new_id("cmpl"),
        created=now(),
        model=state.name,
        choices=out,
        usage=_usage(prompt_len, completion, cached),
    )


def _collect(state: ServerState, req: CompletionRequest, c: _Choice, event, run) -> None:
    if isinstance(event, Failed):
        run.cancel()
        raise ApiError(event.status, event.message)
    if isinstance(event, PromptScores):
        c.entries += _prompt_entries(state, c, event, req.logprobs or 0)
    elif isinstance(event, GenerationChunk):
        c.text.append(event.text)
        c.ids += [] if event.token == NO_TOKEN else [event.token]
        c.last = event
        if req.logprobs is not None and event.logprobs:
            c.entries.append(_token_entry(state, req, event))


def _choice(req: CompletionRequest, index: int, c: _Choice, *, final: bool) -> CompletionChoice:
    """A choice from what ``c`` holds (all of it when ``final``, else the new piece)."""
    text = "".join(c.text)
    if final and req.echo:
        text = c.prompt_text + text
    logprobs = None
    if req.logprobs is not None:
        logprobs = legacy_logprobs(c.entries, c.offset)
    reason, stop_reason = (None, None)
    if final or (c.last is not None and c.last.finish_reason is not None):
        reason, stop_reason = finish_fields(c.last)
    return CompletionChoice(
        index=index,
        text=text,
        logprobs=logprobs,
        finish_reason=reason,
        stop_reason=stop_reason,
        token_ids=c.ids if req.return_token_ids else None,
        prompt_token_ids=c.prompt_ids if req.return_token_ids else None,
    )


def _usage(prompt_len: int, completion: int, cached: int) -> Usage:
    return Usage(
        prompt_tokens=prompt_len,
        completion_tokens=completion,
        total_tokens=prompt_len + completion,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=cached),
    )


async def _stream(
    state: ServerState,
    req: CompletionRequest,
    run: RequestRun,
    choices: list[_Choice],
    prompt_len: int,
) -> AsyncIterator[str]:
    head = {"id": new_id("cmpl"), "created": now(), "model": state.name}
    done = [False] * len(choices)
    try:
        if req.echo and req.logprobs is None:  # The prompt first (with logprobs: once scored).
            for i, c in enumerate(choices):
                echo = CompletionChoice(index=i, text=c.prompt_text, finish_reason=None)
                yield sse(Completion(**head, choices=[echo]))
        async for index, event in run.events():
            c = choices[index]
            if isinstance(event, Failed):
                yield sse_error(event.status, event.message)
                continue
            if not isinstance(event, (PromptScores, GenerationChunk)):  # Done
                if not done[index]:  # Nothing generated (max_tokens=0): say so.
                    done[index] = True
                    last = CompletionChoice(index=index, text="", finish_reason="length")
                    yield sse(Completion(**head, choices=[last]))
                continue
            piece = _Choice(c.prompt_ids, c.prompt_text, offset=c.offset)
            _collect(state, req, piece, event, run)
            if isinstance(event, PromptScores):
                piece.text = [c.prompt_text]
            c.ids += piece.ids
            c.offset += sum(len(e[0]) for e in piece.entries)
            done[index] = piece.last is not None and piece.last.finish_reason is not None
            yield sse(Completion(**head, choices=[_choice(req, index, piece, final=False)]))
        if req.stream_options is not None and req.stream_options.include_usage:
            total = sum(len(c.ids) for c in choices)
            usage = _usage(prompt_len, total, run.cached_tokens(req.n))
            yield sse(Completion(**head, choices=[], usage=usage))
        yield DONE
    finally:
        run.close()  # Sent or abandoned: cancel what runs, free its places in the queue.
