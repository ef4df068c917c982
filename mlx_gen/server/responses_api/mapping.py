"""OpenAI Responses ⇄ the chat request and output (pure functions, no model).

Request → chat: ``instructions`` → a system message first; ``input`` as a string → one
user message; message items (``input_text`` / ``output_text`` parts) → chat messages;
``function_call`` items → the assistant message's ``tool_calls`` (``call_id`` → ``id``);
``function_call_output`` items → ``tool`` messages; ``reasoning`` items are dropped (chat
templates do not re-render earlier reasoning); function ``tools`` → chat function tools;
``tool_choice`` and ``parallel_tool_calls`` → chat's; ``text.format`` ``json_schema`` /
``json_object`` → ``response_format``; ``reasoning.effort`` → ``thinking_budget`` by
:data:`EFFORT_BUDGETS` and ``reasoning_effort`` (the template variable; ``xhigh`` →
``high``); ``reasoning.summary`` is ignored (the reasoning is returned whole);
``max_output_tokens`` → ``max_tokens``; ``top_logprobs`` (or ``include``
``message.output_text.logprobs``) → ``logprobs`` with that many alternatives.
``store: true``, ``previous_response_id``, ``conversation`` and ``background: true`` are
refused (nothing is stored).

Chat output → Responses: a ``reasoning`` item (``reasoning_text``), a ``message`` item
(``output_text``, with the generated tokens' ``logprobs`` when asked) and one
``function_call`` item per tool call; the response is
``incomplete`` (``max_output_tokens``) at the length limit, ``completed`` otherwise.
"""

from __future__ import annotations

from typing import Any

from mlx_gen.server.chat_run import ChatOutcome
from mlx_gen.server.errors import ApiError
from mlx_gen.server.responses_api.schemas import ResponsesRequest

#: Thinking budget (tokens) per ``reasoning.effort``; ``"none"`` turns reasoning off.
EFFORT_BUDGETS = {"minimal": 256, "low": 1024, "medium": 4096, "high": 16384, "xhigh": 32768}

#: The ``include`` value that asks for the output text's logprobs.
LOGPROBS = "message.output_text.logprobs"

#: Chat field → the Responses field a 400 names.
FIELD_NAMES = {
    "max_tokens": "max_output_tokens",
    "response_format": "text.format",
    "tools": "tools",
    "tool_choice": "tool_choice",
    "tool_calls": "input (a function_call item)",
    "tool": "input (a function_call_output item)",
    "thinking_budget": "reasoning",
    "messages": "input",
}


def _refuse_state(req: ResponsesRequest) -> None:
    stored = {
        "store": req.store is True,
        "previous_response_id": req.previous_response_id is not None,
        "conversation": req.conversation is not None,
        "background": req.background is True,
    }
    for name, used in stored.items():
        if used:
            raise ApiError(
                400,
                f"{name}: this server is stateless and stores nothing; send the whole "
                "conversation in input (and leave store unset or false)",
                param=name,
            )


def _part_text(content: str | list, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ApiError(
            400, f"{where}: {content!r} is not valid (a string or text parts)", param=where
        )
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in ("input_text", "output_text", "text"):
            shown = repr(kind) if isinstance(part, dict) else f"of {part!r}"
            raise ApiError(
                400,
                f"{where}[{j}]: part type {shown} is not supported (input_text, output_text)",
                param=f"{where}[{j}]",
            )
        texts.append(str(part.get("text", "")))
    return "".join(texts)


def _item(item: dict, messages: list[dict], where: str) -> None:
    """Append the chat message(s) of one input item to ``messages``."""
    kind = item.get("type", "message")
    if kind == "message" and item.get("role") in ("user", "system", "developer", "assistant"):
        content = _part_text(item.get("content", ""), where + ".content")
        messages.append({"role": item["role"], "content": content})
    elif kind == "function_call":
        function = {"name": item.get("name"), "arguments": item.get("arguments", "")}
        call = {"id": item.get("call_id"), "type": "function", "function": function}
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "assistant":
            last.setdefault("tool_calls", []).append(call)
        else:
            messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
    elif kind == "function_call_output":
        output = _part_text(item.get("output", ""), where + ".output")
        messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": output})
    elif kind != "reasoning":
        raise ApiError(
            400,
            f"{where}: item type {kind!r} (role {item.get('role')!r}) is not supported "
            "(message, function_call, function_call_output, reasoning)",
            param=where,
        )


def _tools(tools: list[dict] | None) -> list[dict] | None:
    if not tools:
        return None
    out = []
    for i, tool in enumerate(tools):
        if tool.get("type") != "function" or not isinstance(tool.get("name"), str):
            raise ApiError(
                400,
                f"tools[{i}]: type {tool.get('type')!r} is not supported (only function "
                "tools, with a name; hosted tools do not exist here)",
                param=f"tools[{i}]",
            )
        keys = ("name", "description", "parameters", "strict")
        out.append({"type": "function", "function": {k: tool[k] for k in keys if k in tool}})
    return out


def _tool_choice(choice: str | dict | None) -> str | dict | None:
    if choice is None or isinstance(choice, str):
        return choice
    if choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise ApiError(
        400,
        f"tool_choice: {choice!r} is not supported (auto, none, required, or "
        "{'type': 'function', 'name': ...})",
        param="tool_choice",
    )


def _format(text: dict | None) -> dict | None:
    fmt = (text or {}).get("format")
    if not isinstance(fmt, dict | None):
        raise ApiError(
            400, f"text.format: {fmt!r} is not supported (an object with a type)",
            param="text.format",
        )  # fmt: skip
    if fmt is None or fmt.get("type") == "text":
        return None
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}
    if fmt.get("type") == "json_schema":
        keys = ("name", "description", "schema", "strict")
        return {"type": "json_schema", "json_schema": {k: fmt[k] for k in keys if k in fmt}}
    raise ApiError(
        400,
        f"text.format: type {fmt.get('type')!r} is not supported (text, json_object, json_schema)",
        param="text.format",
    )


def _budget(reasoning: dict | None) -> int | None:
    effort = (reasoning or {}).get("effort")
    if effort is None or effort == "none":
        return None
    if not isinstance(effort, str) or effort not in EFFORT_BUDGETS:
        raise ApiError(
            400,
            f"reasoning.effort: {effort!r} is not valid (none, {', '.join(EFFORT_BUDGETS)})",
            param="reasoning.effort",
        )
    return EFFORT_BUDGETS[effort]


def _effort(reasoning: dict | None) -> str | None:
    """The chat request's ``reasoning_effort`` (a template variable; ``xhigh`` → ``high``)."""
    effort = (reasoning or {}).get("effort")
    return None if effort in (None, "none") else {"xhigh": "high"}.get(effort, effort)


def to_chat(req: ResponsesRequest, extensions: dict[str, Any]) -> dict[str, Any]:
    """The chat request body for ``req`` (its controls plus mlx_gen's ``extensions``).

    Raises:
        ApiError: 400 naming a stored-state field, or an unsupported item, tool or setting.
    """
    _refuse_state(req)
    messages = [] if req.instructions is None else [{"role": "system", "content": req.instructions}]
    if isinstance(req.input, str):
        messages.append({"role": "user", "content": req.input})
    else:
        for i, item in enumerate(req.input):
            _item(item, messages, f"input[{i}]")
    optional = {
        "max_tokens": req.max_output_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "tools": _tools(req.tools),
        "tool_choice": _tool_choice(req.tool_choice),
        "parallel_tool_calls": req.parallel_tool_calls,
        "response_format": _format(req.text),
        "thinking_budget": _budget(req.reasoning),
        "reasoning_effort": _effort(req.reasoning),
    }
    body = {**extensions, "messages": messages}
    if req.top_logprobs is not None or LOGPROBS in (req.include or ()):
        body.update(logprobs=True, top_logprobs=req.top_logprobs or 0)
    body.update({k: v for k, v in optional.items() if v is not None})
    return body


def output_items(outcome: ChatOutcome, new_id) -> list[dict]:
    """The response's output items (``new_id(prefix)`` makes each item's id)."""
    items: list[dict] = []
    if outcome.reasoning:
        part = {"type": "reasoning_text", "text": outcome.reasoning}
        items.append({"type": "reasoning", "id": new_id("rs"), "summary": [], "content": [part]})
    if outcome.content or not outcome.tool_calls:
        item = message_item(new_id("msg"), outcome.content, "completed")
        item["content"][0]["logprobs"] = response_logprobs(outcome.logprobs)
        items.append(item)
    for call in outcome.tool_calls:
        items.append(
            {
                "type": "function_call",
                "id": new_id("fc"),
                "call_id": call["id"],
                "name": call["function"]["name"],
                "arguments": call["function"]["arguments"],
                "status": "completed",
            }
        )
    return items


def response_logprobs(entries: list[dict]) -> list[dict]:
    """Chat logprob entries in the Responses shape (``token``, ``logprob``, ``bytes``,
    ``top_logprobs`` of the same three)."""
    keys = ("token", "logprob", "bytes")
    return [
        {
            **{k: e[k] for k in keys},
            "top_logprobs": [{k: t[k] for k in keys} for t in e["top_logprobs"]],
        }
        for e in entries
    ]


def message_item(item_id: str, text: str | None, status: str) -> dict:
    """An assistant ``message`` item (``text=None``: no content part yet)."""
    content = [] if text is None else [text_part(text)]
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": content,
    }


def text_part(text: str) -> dict:
    """An ``output_text`` content part."""
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def incomplete(outcome: ChatOutcome) -> dict | None:
    """``incomplete_details`` (``None``: the response is complete)."""
    if outcome.finish == "length":  # a call cut at the limit included
        return {"reason": "max_output_tokens"}
    return None
