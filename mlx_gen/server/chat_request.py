"""What a chat request runs: its messages, rendered prompt, chat plan and choices.

One definition for every chat-style surface: ``/v1/chat/completions``
(:mod:`mlx_gen.server.chat`), ``/v1/messages`` and ``/v1/responses`` (through
:mod:`mlx_gen.server.chat_run`) and ``/apply-template``. Rendering, tokenizing and
compiling the tool grammar happen here: call these off the event loop.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from starlette.concurrency import run_in_threadpool

from mlx_gen.server.bridge import ChoiceSpec
from mlx_gen.server.chat_tools import apply_template, chat_plan, message_dict
from mlx_gen.server.errors import ApiError
from mlx_gen.server.schemas import ChatRequest, Message
from mlx_gen.server.settings_map import (
    base_settings,
    check_prompt_chars,
    choice_settings,
    max_tokens,
)
from mlx_gen.server.state import ServerState
from mlx_gen.settings import GenerationSettings
from mlx_gen.tools import ChatPlan


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
    base = dataclasses.replace(base, speculative=state.speculation.drafter(req.speculative))
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


async def apply_chat_template(state: ServerState, req: ChatRequest) -> dict:
    """``POST /apply-template``: the rendered prompt of a chat request (off the event loop)."""
    state.check_model(req.model)
    state.check_fields(req)
    return await run_in_threadpool(_plan, state, req, None)


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
