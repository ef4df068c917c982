"""Tools and reasoning in chat completions: the request's chat plan, and the parsed
answer as OpenAI message fields and stream deltas.

A chat request goes through :func:`~mlx_gen.tools.prepare_chat` (the same as the Python
API): ``tools``, ``tool_choice``, ``parallel_tool_calls``, ``chat_template_kwargs``,
``reasoning_effort`` (a template variable) and the extension ``thinking_budget``
(``max_thinking_tokens``). Bad input is a 400 naming the field. Each choice's text runs
through its own :class:`~mlx_gen.tools.OutputParser`: the message gets ``content``,
``tool_calls`` and ``reasoning`` (with ``reasoning_content`` as an alias); a stream
gets the same as deltas: a call's ``index``, ``id`` and ``function.name`` first, then
``function.arguments`` fragments as tokens arrive.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from mlx_gen.controls import think_marker_ids
from mlx_gen.server.errors import ApiError
from mlx_gen.server.responses import ChatMessage, Delta
from mlx_gen.settings import GenerationSettings
from mlx_gen.tools import (
    ChatPlan,
    ContentDelta,
    ParsedOutput,
    ReasoningDelta,
    StreamPiece,
    ToolCallArguments,
    ToolCallStart,
    prepare_chat,
)

_MESSAGE_KEYS = ("name", "tool_calls", "tool_call_id", "reasoning_content")


def _field(message: str) -> str:
    """The request field a ``prepare_chat`` error is about."""
    for field in ("tool_choice", "tools", "chat_template_kwargs", "tool_format"):
        if message.startswith(field):
            return field
    if "max_thinking_tokens" in message:
        return "thinking_budget"
    return "messages"


def chat_plan(
    tokenizer: Any, req: Any, messages: list[dict[str, Any]], base: GenerationSettings
) -> ChatPlan:
    """The request's :class:`~mlx_gen.tools.ChatPlan` (``base``: its settings).

    Raises:
        ApiError: 400 naming the invalid field (``thinking_budget`` when the model has no
            single-token ``<think>`` / ``</think>``).
    """
    variables = dict(req.chat_template_kwargs or {})
    if req.reasoning_effort is not None:
        variables.setdefault("reasoning_effort", req.reasoning_effort)
    if req.thinking_budget is not None:
        if think_marker_ids(tokenizer) is None:  # named here, not by the worker's admission
            raise ApiError(
                400,
                f"thinking_budget: {req.thinking_budget} needs a reasoning model: <think> and "
                "</think> must be single tokens of the vocabulary, and are not here",
                param="thinking_budget",
            )
        base = replace(base, max_thinking_tokens=req.thinking_budget)
    try:
        plan = prepare_chat(
            tokenizer,
            messages,
            settings=base,
            tools=req.tools,
            tool_choice=req.tool_choice,
            parallel_tool_calls=req.parallel_tool_calls,
            tool_format=req.tool_format,
            chat_template_kwargs=variables or None,
        )
    except ValueError as err:
        field = _field(str(err))
        raise ApiError(
            400, f"{field}: {err}" if field == "messages" else str(err), param=field
        ) from err
    return plan


def message_dict(role: str, content: Any, extra: dict[str, Any]) -> dict[str, Any]:
    """One message for the template: role, content and the tool fields that were sent."""
    out = {"role": role, "content": content}
    out.update({k: v for k, v in extra.items() if k in _MESSAGE_KEYS and v is not None})
    return out


def delta_of(pieces: list[StreamPiece]) -> Delta | None:
    """The stream delta of ``pieces`` (``None`` when they say nothing)."""
    content, reasoning, calls = "", "", []
    for p in pieces:
        if isinstance(p, ContentDelta):
            content += p.text
        elif isinstance(p, ReasoningDelta):
            reasoning += p.text
        elif isinstance(p, ToolCallStart):
            calls.append(
                {
                    "index": p.index,
                    "id": p.id,
                    "type": "function",
                    "function": {"name": p.name, "arguments": ""},
                }
            )
        elif isinstance(p, ToolCallArguments):
            calls.append({"index": p.index, "function": {"arguments": p.fragment}})
    if not (content or reasoning or calls):
        return None
    return Delta(
        content=content or None,
        reasoning=reasoning or None,
        reasoning_content=reasoning or None,
        tool_calls=calls or None,
    )


def message_of(parsed: ParsedOutput) -> ChatMessage:
    """The non-streamed message of a parsed answer."""
    calls = [c.to_openai() for c in parsed.tool_calls] or None
    content = parsed.content if parsed.content or not calls else None
    return ChatMessage(
        content=content,
        tool_calls=calls,
        reasoning=parsed.reasoning,
        reasoning_content=parsed.reasoning,
    )


def finish_reason(reason: str | None, parsed: ParsedOutput | None) -> str | None:
    """``tool_calls`` when an answer that ended normally called tools."""
    if reason == "stop" and parsed is not None and parsed.tool_calls:
        return "tool_calls"
    return reason


def apply_template(tokenizer: Any, req: Any, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """``POST /apply-template``: the prompt a chat request renders to (nothing generated).

    Returns:
        ``{"prompt": text, "prompt_token_ids": ids, "tool_format": name or None,
        "reasoning_open": bool}``.
    """
    plan = chat_plan(tokenizer, req, messages, GenerationSettings())
    return {
        "prompt": plan.prompt_text,
        "prompt_token_ids": plan.prompt_ids,
        "tool_format": plan.format.name if plan.format is not None else None,
        "reasoning_open": plan.reasoning_open,
    }
