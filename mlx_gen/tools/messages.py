"""Chat history with tool calls, made safe for real chat templates.

OpenAI clients send ``function.arguments`` as a JSON *string*; most templates expect a
mapping (Qwen3-Coder's iterates it, Qwen2.5's, Llama 3.1's and Mistral Nemo's
``tojson`` a string twice), so it is parsed here; a format whose template concatenates
it as text (DeepSeek V3.1) gets the checked JSON string instead. An assistant message with calls and
``content: null`` gets ``""`` (Qwen3's template splits the content). For the generic
format, whose templates know no tools, calls become the assistant's JSON envelope and
tool results become user turns. Malformed calls and tool messages are refused here,
naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from mlx_gen.tools.formats.base import ToolFormat
from mlx_gen.tools.schema import ToolSpec
from mlx_gen.tools.types import parse_arguments


def _call(call: Any, where: str, as_text: bool) -> dict[str, Any]:
    if not isinstance(call, Mapping) or not isinstance(call.get("function"), Mapping):
        raise ValueError(
            f"{where} must be {{'type': 'function', 'function': {{'name', 'arguments'}}}}"
        )
    function = call["function"]
    name, arguments = function.get("name"), function.get("arguments", {})
    text = arguments if isinstance(arguments, str) else None
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}.function.name={name!r} is invalid (expected a tool name)")
    if isinstance(arguments, str):
        try:
            arguments = parse_arguments(arguments)
        except ValueError as e:
            raise ValueError(f"{where}.function.arguments: {e}") from None
    if not isinstance(arguments, Mapping):
        raise ValueError(f"{where}.function.arguments must be a JSON object or its text")
    call_id = call.get("id")
    if call_id is not None and not isinstance(call_id, str):
        raise ValueError(f"{where}.id={call_id!r} is invalid (expected a string)")
    value: Any = dict(arguments)
    if as_text:  # the caller's own text when it sent one, else its JSON rendering
        value = text if text is not None else json.dumps(value, ensure_ascii=False)
    out = {"type": "function", "function": {"name": name, "arguments": value}}
    return out | ({"id": call_id} if call_id is not None else {})


def normalize_messages(
    messages: Sequence[Mapping[str, Any]], *, arguments_text: bool = False
) -> list[dict[str, Any]]:
    """Messages with calls parsed and checked (see the module docstring).

    Args:
        messages: The chat history.
        arguments_text: Give each call's arguments as JSON text, not as a mapping.

    Raises:
        ValueError: A malformed ``tool_calls`` entry or a ``tool`` message without a
            string ``tool_call_id`` (``messages[i]...`` named).
    """
    out = []
    for i, message in enumerate(messages):
        m = dict(message)
        if m.get("role") == "tool" and not isinstance(m.get("tool_call_id"), str):
            raise ValueError(
                f"messages[{i}] is a 'tool' message without a 'tool_call_id' (the id of the "
                "call it answers)"
            )
        calls = m.get("tool_calls")
        if calls is not None:
            if not isinstance(calls, Sequence) or isinstance(calls, (str, Mapping)):
                raise ValueError(f"messages[{i}].tool_calls must be a list of calls")
            m["tool_calls"] = [
                _call(c, f"messages[{i}].tool_calls[{j}]", arguments_text)
                for j, c in enumerate(calls)
            ]
            if m.get("content") is None:
                m["content"] = ""
        out.append(m)
    return out


def generic_system_prompt(tools: Sequence[ToolSpec], mode: str) -> str:
    """The system text that describes ``tools`` to a model without tool support."""
    listing = json.dumps([t.definition["function"] for t in tools], indent=2)
    call = '{"tool_calls": [{"name": "<tool name>", "arguments": {<arguments>}}]}'
    answer = f"Respond with a JSON object: {call} to call tools" + (
        "." if mode == "required" else ', or {"response": "<your answer>"} to answer.'
    )
    return f"You can call these tools:\n{listing}\n\n{answer}"


def generic_messages(
    messages: Sequence[dict[str, Any]], tools: Sequence[ToolSpec], mode: str
) -> list[dict[str, Any]]:
    """Normalized ``messages`` for the generic format: tools in the system message,
    calls as JSON envelopes, tool results as user turns."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.get("tool_calls"):
            calls = [
                {"name": c["function"]["name"], "arguments": c["function"]["arguments"]}
                for c in m["tool_calls"]
            ]
            out.append({"role": "assistant", "content": json.dumps({"tool_calls": calls})})
        elif m.get("role") == "tool":
            result = {"tool_call_id": m["tool_call_id"], "content": m.get("content")}
            out.append({"role": "user", "content": json.dumps({"tool_response": result})})
        else:
            out.append(m)
    if tools and mode != "none":
        text = generic_system_prompt(tools, mode)
        if out and out[0].get("role") == "system" and isinstance(out[0].get("content"), str):
            out[0] = {**out[0], "content": out[0]["content"] + "\n\n" + text}
        else:
            out.insert(0, {"role": "system", "content": text})
    return out


def template_messages(
    messages: Sequence[Mapping[str, Any]], fmt: ToolFormat, tools: Sequence[ToolSpec], mode: str
) -> list[dict[str, Any]]:
    """What the chat template receives for ``messages`` in format ``fmt``."""
    normal = normalize_messages(messages, arguments_text=fmt.arguments_text)
    return normal if fmt.native_tools else generic_messages(normal, tools, mode)
