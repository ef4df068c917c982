"""The call syntax as an llguidance Lark grammar, built from each tool's ``parameters``.

Per ``tool_choice`` (after an optional reasoning prefix, see :mod:`mlx_gen.tools.reasoning`):

* ``required``: the answer is a call section from its first token (a named choice: only
  that tool);
* ``auto``: free text, lazily: the grammar arms when the format's trigger is produced
  (a special token, or the marker text anywhere in the text); for formats whose call
  section is the whole answer, the answer is a section or text that does not start
  like one (the generic format: a ``{"response": ...}`` envelope);
* ``parallel_tool_calls=False`` (or a single-call format): exactly one call per section.

Tool names are limited to the declared set and arguments to each tool's schema (JSON
arguments via llguidance's ``%json``; pythonic and XML arguments parameter by
parameter, in declared order, required ones mandatory).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import llguidance

from mlx_gen.constraints import Constraint
from mlx_gen.tools.formats.base import ToolFormat
from mlx_gen.tools.schema import ToolSpec

JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
RAW_STRING_KEYS = {
    "type",
    "description",
    "title",
    "enum",
    "minLength",
    "maxLength",
    "default",
    "examples",
}
ANY_TEXT = "/(?s:.*)/"
# What a pythonic or XML call enforces at the object level: only declared parameters are
# written (so ``additionalProperties`` always holds), required ones always.
OBJECT_KEYS = {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "description",
    "title",
    "$schema",
}


class ToolGrammar(Constraint):
    """The tool-call grammar of one request (llguidance's Lark dialect): a
    :class:`~mlx_gen.constraints.Constraint`, so every decode path (single, batched,
    server, speculative) enforces it unchanged. Each tool's schema was checked on its
    own (:func:`~mlx_gen.tools.schema.check_tools`); the whole grammar is compiled once
    per tokenizer by :func:`~mlx_gen.constraints.compile_constraint` (cached).

    Attributes:
        lark: The grammar text.
    """

    def __init__(self, lark: str, description: str) -> None:
        super().__init__(llguidance.LLMatcher.grammar_from_lark(lark), description)
        self.lark = lark


class Pieces:
    """Renders literal pieces as Lark: a special token of the vocabulary as ``<[id]>``,
    anything else as a string literal, where a piece's leading space (``" ["``) is
    optional: tokenizers differ on it (the parser reads any whitespace there too).

    Args:
        specials: Special-token text → id (from :func:`special_tokens`).
    """

    def __init__(self, specials: Mapping[str, int]) -> None:
        self.specials = dict(specials)

    def special(self, piece: str) -> bool:
        """Whether ``piece`` is one special token."""
        return piece in self.specials

    def __call__(self, pieces: Sequence[str]) -> str:
        out = [self._one(p) for p in pieces]
        return " ".join(o for o, p in zip(out, pieces, strict=True) if p) or '""'

    def _one(self, piece: str) -> str:
        if piece in self.specials:
            return f"<[{self.specials[piece]}]>"
        if piece.startswith(" ") and piece.strip():
            return f'" "? {json.dumps(piece[1:])}'
        return json.dumps(piece)


def json_value(schema: Mapping[str, Any]) -> str:
    """``%json`` of ``schema`` in the canonical style (``{"a": 1, "b": [2, 3]}``)."""
    # Key order kept: llguidance writes properties in the schema's order.
    return "%json " + json.dumps({**schema, "x-guidance": JSON_STYLE})


def _param_chain(tool: ToolSpec, prefix: str, item: Any, sep: str) -> list[str]:
    """Rules for parameters in declared order (required ones mandatory, ``sep`` between)."""
    props = tool.parameters.get("properties") or {}
    required = set(tool.parameters.get("required") or ())
    names = list(props)
    rules = []
    for i in range(len(names), -1, -1):
        for started in (0, 1):
            rule = f"{prefix}_p{i}_{started}"
            if i == len(names):
                rules.append(f'{rule}: ""')
                continue
            lead = f"{sep} " if started and sep else ""
            alts = [f"{lead}{item(names[i], props[names[i]])} {prefix}_p{i + 1}_1"]
            if names[i] not in required:
                alts.append(f"{prefix}_p{i + 1}_{started}")
            rules.append(f"{rule}: " + " | ".join(alts))
    return rules


def _python_value(schema: Mapping[str, Any]) -> str:
    if schema.get("type") == "boolean" and set(schema) <= {"type", "description", "title"}:
        return '("True" | "False")'
    return json_value(schema)


def _raw_string(name: str, schema: Mapping[str, Any], where: str) -> str:
    bad = sorted(set(schema) - RAW_STRING_KEYS)
    if bad:
        raise ValueError(
            f"{where}.properties.{name}: keyword(s) {bad} cannot be enforced on a raw string "
            f"parameter of the qwen3_coder format (supported: {sorted(RAW_STRING_KEYS)})"
        )
    if "enum" in schema:
        return "(" + " | ".join(json.dumps(str(v)) for v in schema["enum"]) + ")"
    low, high = schema.get("minLength", 0), schema.get("maxLength")
    body = f"/(?s:.{{{low},{'' if high is None else high}}})/"
    return f"({body} & ~/(?s:.*)<\\/parameter>(?s:.*)/)"


def _check_object(fmt: ToolFormat, parameters: Mapping[str, Any], where: str) -> None:
    """Refuse object-level keywords a parameter-by-parameter syntax cannot enforce."""
    bad = sorted(set(parameters) - OBJECT_KEYS)
    if bad:
        raise ValueError(
            f"{where}: keyword(s) {bad} cannot be enforced by the {fmt.name} format, which "
            f"writes arguments parameter by parameter (supported: {sorted(OBJECT_KEYS)})"
        )
    props = parameters.get("properties") or {}
    missing = [n for n in parameters.get("required") or () if n not in props]
    if missing:
        raise ValueError(
            f"{where}: required {missing} are not in properties; the {fmt.name} format "
            "writes only declared parameters"
        )


def args_rules(fmt: ToolFormat, tool: ToolSpec, prefix: str, where: str) -> tuple[str, list[str]]:
    """``(expression, extra rules)`` for one tool's arguments in ``fmt``'s syntax."""
    if fmt.args == "json":
        return json_value(tool.parameters), []
    if "$defs" in tool.parameters or "definitions" in tool.parameters:
        raise ValueError(f"{where}: $defs are not supported by the {fmt.name} format")
    _check_object(fmt, tool.parameters, where)
    if fmt.args == "pythonic":
        item = lambda k, s: f'"{k}=" {_python_value(s)}'  # noqa: E731
        return f"{prefix}_p0_0", _param_chain(tool, prefix, item, '", "')
    terminals: list[str] = []

    def xml_item(k: str, s: Mapping[str, Any]) -> str:
        if s.get("type") == "string":
            terminals.append(f"{prefix.upper()}_S{len(terminals)}: {_raw_string(k, s, where)}")
            value = terminals[-1].split(":", 1)[0]
        else:
            value = json_value(s)
        return f'"<parameter={k}>\\n" {value} "\\n</parameter>\\n"'

    rules = _param_chain(tool, prefix, xml_item, "")
    return f"{prefix}_p0_0", rules + terminals


def tool_call_lark(
    fmt: ToolFormat,
    tools: Sequence[ToolSpec],
    *,
    mode: str,
    parallel: bool,
    specials: Mapping[str, int],
    prefix: str = "",
) -> str:
    """The Lark grammar of an answer (see the module docstring).

    Args:
        fmt: The call syntax.
        tools: The tools the model may call (one, for a named choice).
        mode: ``required`` or ``auto``.
        parallel: More than one call per section is allowed.
        specials: Special-token text → id.
        prefix: A Lark expression that comes first (the reasoning block), or ''.

    Raises:
        ValueError: A parameter schema this format cannot enforce (named).
    """
    lit = Pieces(specials)
    rules: list[str] = []
    opening, trigger = fmt.opening(), fmt.trigger
    from_section = bool(fmt.section_open)
    rest_open = opening[1:] if not from_section else fmt.call_open
    names = []
    for i, tool in enumerate(tools):
        args, extra = args_rules(fmt, tool, f"t{i}", f"tools[{i}].function.parameters")
        rules += extra
        body = f"{lit(fmt.head(tool.name))} {args} {lit(fmt.tail(tool.name))} {lit(fmt.call_close)}"
        first = lit(rest_open) if not from_section else lit(fmt.call_open)
        rules.append(f"call_rest_{i}: {first} {body}")
        names.append(f"call_rest_{i}")
    rules.append("call_rest: " + " | ".join(names))
    lead = lit((trigger,)) if not from_section else ""
    rules.append(f"call: {lead} call_rest" if lead else "call: call_rest")
    more = "" if fmt.single_call or not parallel else f" ({lit(fmt.separator)} call)*"
    section_rest = lit(fmt.section_open[1:]) if from_section else ""
    first_call = "call" if from_section else "call_rest"
    rules.append(f"tail: {section_rest} {first_call}{more} {lit(fmt.section_close)}")
    if mode == "required":
        top = f"{lit((trigger,))} tail"
    elif fmt.anywhere:
        if lit.special(trigger):
            rules.append(f"head: TEXT {lit((trigger,))}")
        else:
            rules.append(f"head[lazy]: TEXT {lit((trigger,))}")
        top = "TEXT | head tail"
    else:
        content = fmt.response or "/([^" + re.escape(trigger[0]).replace("/", "\\/") + "](?s:.*))?/"
        top = f"{content} | {lit((trigger,))} tail"
    return "\n".join([f"start: {prefix} ({top})", *rules, f"TEXT: {ANY_TEXT}"]) + "\n"


def special_tokens(tokenizer: Any) -> dict[str, int]:
    """Special-token text → id of a tokenizer (an mlx-lm wrapper or a HF tokenizer)."""
    inner = getattr(tokenizer, "_tokenizer", tokenizer)
    added = getattr(inner, "added_tokens_decoder", None) or {}
    return {str(t.content): int(i) for i, t in added.items() if getattr(t, "special", False)}
