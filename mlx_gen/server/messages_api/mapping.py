"""Anthropic Messages ⇄ the chat request and output (pure functions, no model).

Request → chat: ``system`` → a system message; text blocks → the message's text;
``tool_use`` blocks → the assistant message's ``tool_calls`` (``input`` as JSON
``arguments``); ``tool_result`` blocks → ``tool`` messages (``tool_call_id``), before the
turn's text; ``thinking`` blocks → the assistant message's ``reasoning_content``; ``tools`` →
chat function tools (``input_schema`` → ``parameters``); ``tool_choice`` ``auto`` /
``any`` / ``tool`` / ``none`` → ``"auto"`` / ``"required"`` / the named function /
``"none"`` (``disable_parallel_tool_use`` → ``parallel_tool_calls: false``);
``thinking.budget_tokens`` → ``thinking_budget``; ``stop_sequences`` →
``stop``; ``output_config.format`` (``json_schema``) → ``response_format``
(``output_config.effort`` is ignored: the thinking budget is ``thinking.budget_tokens``).
Images and documents are refused by block.

Chat output → Anthropic: reasoning → a ``thinking`` block, the text → a ``text`` block,
each tool call → a ``tool_use`` block; the stop reason is ``max_tokens`` at the length
limit (also when it cut a call), ``tool_use`` when it called a tool, ``stop_sequence``
(with the string) when a stop sequence matched, and ``end_turn`` otherwise (EOS, or a
constraint that ended).
"""

from __future__ import annotations

import json
from typing import Any

from mlx_gen.server.chat_run import ChatOutcome
from mlx_gen.server.errors import ApiError
from mlx_gen.server.messages_api.schemas import CountTokensRequest, MessagesRequest

#: Chat field → the Anthropic field a 400 names.
FIELD_NAMES = {
    "stop": "stop_sequences",
    "tools": "tools",
    "tool_choice": "tool_choice",
    "tool_calls": "messages (a tool_use block)",
    "tool": "messages (a tool_result block)",
    "thinking_budget": "thinking",
    "messages": "messages",
    "response_format": "output_config.format",
}


def _text(blocks: str | list[dict], where: str) -> str:
    """The text of a string or of text blocks (``system``, a ``tool_result``'s content)."""
    if isinstance(blocks, str):
        return blocks
    if not isinstance(blocks, list):
        raise ApiError(
            400, f"{where}: {blocks!r} is not valid (a string or text blocks)", param=where
        )
    parts = []
    for j, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind != "text" or not isinstance(block.get("text"), str):
            raise ApiError(
                400,
                f"{where}[{j}]: {block!r} is not supported here (only text blocks "
                "with a string text)",
                param=f"{where}[{j}]",
            )
        parts.append(block["text"])
    return "".join(parts)


def _turn(role: str, content: str | list[dict], where: str) -> list[dict]:
    """One Anthropic message → chat messages (tool results first, then the turn)."""
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    results, texts, calls, thinking = [], [], [], []
    for j, block in enumerate(content):
        kind, at = block.get("type"), f"{where}.content[{j}]"
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "tool_use" and role == "assistant":
            arguments = json.dumps(block.get("input", {}), ensure_ascii=False)
            call = {"name": block.get("name"), "arguments": arguments}
            calls.append({"id": block.get("id"), "type": "function", "function": call})
        elif kind == "tool_result" and role == "user":
            text = _text(block.get("content", ""), at + ".content")
            results.append(
                {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text}
            )
        elif kind in ("thinking", "redacted_thinking") and role == "assistant":
            thinking.append(str(block.get("thinking", "")))
        elif kind == "text":
            raise ApiError(400, f"{at}: text={block.get('text')!r} is not a string", param=at)
        else:
            raise ApiError(
                400,
                f"{at}: block type {kind!r} is not supported in a {role} message (supported: "
                "text, tool_use and thinking from the assistant, tool_result from the user)",
                param=at,
            )
    out = results
    if texts or calls or thinking or not results:
        message: dict[str, Any] = {"role": role, "content": "".join(texts)}
        if calls:
            message["tool_calls"] = calls
        if thinking:
            message["reasoning_content"] = "".join(thinking)
        out = [*results, message]
    return out


def _tool_choice(choice: dict | None) -> str | dict | None:
    if choice is None:
        return None
    kind = choice.get("type")
    if kind in ("auto", "none"):
        return kind
    if kind == "any":
        return "required"
    if kind == "tool" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise ApiError(
        400,
        f"tool_choice: {choice!r} is not valid "
        "(expected type auto, any, none, or tool with a name)",
        param="tool_choice",
    )


def _parallel(choice: dict | None) -> bool | None:
    """``tool_choice.disable_parallel_tool_use: true`` → chat ``parallel_tool_calls: false``."""
    if choice is not None and choice.get("disable_parallel_tool_use") is True:
        return False
    return None


def _tools(tools: list[dict] | None) -> list[dict] | None:
    if not tools:
        return None
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool.get("name"), str) or tool.get("type") not in (None, "custom"):
            raise ApiError(
                400,
                f"tools[{i}]: only client tools with a name and an input_schema are supported "
                f"(got type {tool.get('type')!r})",
                param=f"tools[{i}]",
            )
        function = {"name": tool["name"], "parameters": tool.get("input_schema", {})}
        if tool.get("description"):
            function["description"] = tool["description"]
        out.append({"type": "function", "function": function})
    return out


def _thinking(thinking: dict | None) -> int | None:
    if thinking is None or thinking.get("type") == "disabled":
        return None
    budget = thinking.get("budget_tokens")
    if thinking.get("type") != "enabled" or not isinstance(budget, int) or budget < 1:
        raise ApiError(
            400,
            f"thinking: {thinking!r} is not valid (expected {{'type': 'enabled', "
            "'budget_tokens': N >= 1} or {'type': 'disabled'})",
            param="thinking",
        )
    return budget


def _format(config: dict | None) -> dict | None:
    fmt = (config or {}).get("format")
    if fmt is None:
        return None
    if (
        not isinstance(fmt, dict)
        or fmt.get("type") != "json_schema"
        or not isinstance(fmt.get("schema"), dict)
    ):
        raise ApiError(
            400,
            f"output_config.format: {fmt!r} is not valid (expected type json_schema with a schema)",
            param="output_config.format",
        )
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": fmt["schema"]}}


def to_chat(req: CountTokensRequest, extensions: dict[str, Any]) -> dict[str, Any]:
    """The chat request body for ``req`` (its controls plus mlx_gen's ``extensions``).

    Raises:
        ApiError: 400 naming an unsupported block, tool or setting.
    """
    messages = []
    if req.system is not None:
        messages.append({"role": "system", "content": _text(req.system, "system")})
    for i, message in enumerate(req.messages):
        messages += _turn(message.role, message.content, f"messages[{i}]")
    body: dict[str, Any] = {**extensions, "messages": messages}
    optional = {
        "tools": _tools(req.tools),
        "tool_choice": _tool_choice(req.tool_choice),
        "parallel_tool_calls": _parallel(req.tool_choice),
        "thinking_budget": _thinking(req.thinking),
        "response_format": _format(req.output_config),
    }
    if isinstance(req, MessagesRequest):
        optional.update(
            max_tokens=req.max_tokens,
            stop=req.stop_sequences,
            temperature=req.temperature,
            top_p=req.top_p,
            top_k=req.top_k,
        )
    body.update({k: v for k, v in optional.items() if v is not None})
    return body


def content_blocks(outcome: ChatOutcome) -> list[dict]:
    """The reply's content blocks: thinking, text (always, when no tool is called), tool uses."""
    blocks: list[dict] = []
    if outcome.reasoning:
        blocks.append({"type": "thinking", "thinking": outcome.reasoning, "signature": ""})
    if outcome.content or not outcome.tool_calls:
        blocks.append({"type": "text", "text": outcome.content})
    for call in outcome.tool_calls:
        function = call["function"]
        blocks.append(
            {
                "type": "tool_use",
                "id": call["id"],
                "name": function["name"],
                "input": json.loads(function["arguments"] or "{}"),
            }
        )
    return blocks


def stop_fields(outcome: ChatOutcome) -> tuple[str, str | None]:
    """``(stop_reason, stop_sequence)`` of a finished reply (``max_tokens`` first: a call
    cut at the limit is not a tool use)."""
    if outcome.finish == "length":
        return "max_tokens", None
    if outcome.tool_calls:
        return "tool_use", None
    if outcome.finish == "stop_string":
        return "stop_sequence", str(outcome.matched)
    return "end_turn", None
