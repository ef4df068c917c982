"""Read a call section of one format from text that may still be growing.

:func:`scan_calls` re-reads a section from its start and reports every call found so
far: its name once the header is complete, and its arguments text so far (JSON
arguments grow with the text; pythonic and XML arguments appear, as JSON, when the
call is complete). Whitespace in a literal piece matches any whitespace in the text.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlx_gen.tools.formats.base import ToolFormat
from mlx_gen.tools.schema import ToolSpec

PARTIAL = -1  # the text ends inside the literal
_PARAM = re.compile(r"<parameter=([^>\n]+)>\n?(.*?)\n?</parameter>", re.S)


@dataclass
class PartialCall:
    """A call read so far: ``args`` is a prefix of its final arguments JSON text."""

    name: str
    args: str
    complete: bool = False


def expect(text: str, pos: int, pieces: Sequence[str]) -> int | None:
    """The end of ``pieces`` read at ``pos`` (``PARTIAL`` if ``text`` ends inside them,
    ``None`` if ``text`` says something else)."""
    literal = "".join(pieces)
    if not literal:
        return pos
    pattern = r"\s*".join(re.escape(part) for part in literal.split())
    lead = r"\s*" if literal[0].isspace() else ""
    trail = r"\s*" if literal[-1].isspace() else ""
    match = re.compile(lead + pattern + trail).match(text, pos)
    if match and (match.end() < len(text) or not trail):
        return match.end()
    squeezed, rest = "".join(literal.split()), "".join(text[pos:].split())
    return PARTIAL if squeezed.startswith(rest) or match else None


def json_end(text: str, pos: int) -> int | None:
    """The end of the JSON object or array starting at ``pos`` (``None``: not closed yet)."""
    depth, in_string, escaped = 0, False, False
    for i in range(pos, len(text)):
        c = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def string_prefix(body: str) -> tuple[str, bool]:
    """The decoded prefix of a JSON string body (after its opening quote) that cannot
    change as more text comes, and whether the closing quote was read."""
    i, cut = 0, 0
    while i < len(body):
        c = body[i]
        if c == '"':
            return json.loads('"' + body[:i] + '"'), True
        if c != "\\":
            i, cut = i + 1, i + 1
            continue
        size = 6 if body[i + 1 : i + 2] == "u" else 2
        if i + size > len(body):
            break
        high = size == 6 and body[i + 2 : i + 4].lower() in ("d8", "d9", "da", "db")
        if high and i + 12 > len(body):  # half of a surrogate pair: wait for the rest
            break
        i = cut = i + (12 if high else size)
    return json.loads('"' + body[:cut] + '"'), False


def python_end(text: str, pos: int) -> int | None:
    """The index of the ``)`` closing a pythonic call whose arguments start at ``pos``."""
    depth, quote, escaped = 0, "", False
    for i in range(pos, len(text)):
        c = text[i]
        if quote:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            if depth == 0:
                return i
            depth -= 1
    return None


def _literal(node: ast.AST) -> Any:
    if isinstance(node, ast.Name) and node.id in ("true", "false", "null"):
        return {"true": True, "false": False, "null": None}[node.id]
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Dict):
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values, strict=True)}
    return ast.literal_eval(node)


def python_arguments(text: str) -> str:
    """``a=1, b="x"`` as the JSON text ``{"a": 1, "b": "x"}``.

    Raises:
        ValueError: Not keyword arguments with literal values.
    """
    try:
        call = ast.parse(f"f({text})", mode="eval").body
        assert isinstance(call, ast.Call) and not call.args
        return json.dumps({k.arg: _literal(k.value) for k in call.keywords}, ensure_ascii=False)
    except (SyntaxError, ValueError, AssertionError, TypeError) as e:
        raise ValueError(f"pythonic call arguments {text[:80]!r} are not keyword literals") from e


def xml_arguments(text: str, schema: Mapping[str, Any]) -> str:
    """Qwen3-Coder parameters as JSON text: string parameters as they are, others as JSON."""
    props = schema.get("properties") or {}
    out: dict[str, Any] = {}
    for key, raw in _PARAM.findall(text):
        if (props.get(key) or {}).get("type") == "string":
            out[key] = raw
            continue
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return json.dumps(out, ensure_ascii=False)


def _header(fmt: ToolFormat, tools: Sequence[ToolSpec], text: str, pos: int):
    """``(tool, end)`` of the header at ``pos``; ``(None, PARTIAL)`` or ``(None, None)``."""
    partial = False
    for tool in sorted(tools, key=lambda t: -len(t.name)):
        end = expect(text, pos, fmt.head(tool.name))
        if end is not None and end != PARTIAL:
            return tool, end
        partial = partial or end == PARTIAL
    return None, PARTIAL if partial else None


def _arguments(fmt: ToolFormat, tool: ToolSpec, text: str, pos: int) -> tuple[str, int | None]:
    """``(arguments JSON so far, end of the arguments or None)``."""
    if fmt.args == "json":
        while pos < len(text) and text[pos].isspace():
            pos += 1
        end = json_end(text, pos)
        return text[pos : end if end is not None else len(text)], end
    if fmt.args == "pythonic":
        end = python_end(text, pos)
        return ("", None) if end is None else (python_arguments(text[pos:end]), end)
    end = text.find("</function>", pos)
    return ("", None) if end < 0 else (xml_arguments(text[pos:end], tool.parameters), end)


def scan_calls(
    fmt: ToolFormat, tools: Sequence[ToolSpec], text: str, *, final: bool
) -> tuple[list[PartialCall], int | None, bool]:
    """Read the call section that starts ``text``.

    Returns:
        ``(calls, end, ok)``: the calls so far; where the section ended (``None`` while
        it may go on); ``ok`` is false when the text is not a call section of ``fmt``
        (then ``end`` is where the last complete call ended).
    """
    calls: list[PartialCall] = []
    pos = expect(text, 0, fmt.section_open)
    if pos is None or pos == PARTIAL:
        return calls, (0 if final or pos is None else None), pos == PARTIAL and not final
    while True:
        start = expect(text, pos, fmt.call_open)
        tool, at = (None, start) if start in (None, PARTIAL) else _header(fmt, tools, text, start)
        if tool is None:
            if at == PARTIAL and not final:
                return calls, None, True
            break
        args, end = _arguments(fmt, tool, text, at)
        calls.append(PartialCall(tool.name, args))
        if end is None:
            return calls, None, True
        after = expect(text, end, (*fmt.tail(tool.name), *fmt.call_close))
        if after is None or after == PARTIAL:
            return calls, (None if after == PARTIAL and not final else pos), after == PARTIAL
        calls[-1].complete, pos = True, after
        if fmt.single_call:
            break
        sep = expect(text, pos, fmt.separator)
        if sep == PARTIAL and not final:
            return calls, None, True
        if sep is None or sep == PARTIAL or expect(text, sep, fmt.call_open) is None:
            break
        if expect(text, sep, fmt.call_open) == PARTIAL and not final:
            return calls, None, True
        pos = sep
    close = expect(text, pos, fmt.section_close)
    if close == PARTIAL and not final:
        return calls, None, True
    ok = close is not None and close != PARTIAL and bool(calls)
    return calls, close if ok else pos, ok
