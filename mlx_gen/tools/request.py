"""One chat request with tools and/or reasoning, resolved once: the rendered prompt, the
settings that enforce the call syntax, and the parser of the answer.

:func:`prepare_chat` is what :func:`~mlx_gen.stream.stream_generate` (and the CLI and
server) call for ``messages=``. It detects the tool format (or takes ``tool_format``),
renders the template with the tools (natively, or in a system message for the generic
format) and the caller's template variables, and:

* ``tool_choice`` ``auto``/``required``/named: sets a :class:`ToolGrammar` as the
  constraint (after the think block, when the model reasons);
* ``none``: bans the format's start marker (as ``bad_words``) and parses no calls;
* a ``JsonSchema`` constraint on a reasoning model applies after the think block.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from mlx_gen.constraints import Constraint, JsonSchema
from mlx_gen.prompts import Messages, check_messages
from mlx_gen.settings import GenerationSettings
from mlx_gen.tools.formats import ToolFormat, detect_format, format_named
from mlx_gen.tools.grammar import ToolGrammar, json_value, special_tokens, tool_call_lark
from mlx_gen.tools.messages import template_messages
from mlx_gen.tools.parser import OutputParser
from mlx_gen.tools.reasoning import (
    ReasoningSyntax,
    detect_reasoning,
    opened_by_prompt,
    reasoning_lark,
)
from mlx_gen.tools.schema import ToolChoice, ToolSpec, check_tool_choice, check_tools

MAX_TEMPLATE_KWARGS_BYTES = 65536
RESERVED = {"messages", "tools", "add_generation_prompt", "tokenize", "return_dict"}


@dataclass(frozen=True)
class ChatPlan:
    """A resolved chat request.

    Attributes:
        prompt_text: The rendered prompt.
        prompt_ids: Its token ids.
        settings: The caller's settings plus what enforces ``tool_choice``.
        format: The tool format (``None`` without tools).
        tools: The declared tools.
        choice: The resolved ``tool_choice``.
        reasoning: The think-block markers (``None``: not a reasoning template).
        reasoning_open: The prompt ends inside an open think block.
    """

    prompt_text: str
    prompt_ids: list[int]
    settings: GenerationSettings
    format: ToolFormat | None
    tools: tuple[ToolSpec, ...]
    choice: ToolChoice
    reasoning: ReasoningSyntax | None
    reasoning_open: bool

    def parser(self) -> OutputParser:
        """A fresh parser for one answer (calls parsed unless ``tool_choice`` is ``none``)."""
        fmt = self.format if self.choice.mode != "none" else None
        return OutputParser(
            fmt, self.tools, reasoning=self.reasoning, reasoning_open=self.reasoning_open
        )


def template_text(tokenizer: Any) -> str:
    """The chat template text (every named template joined), or ''."""
    value = getattr(tokenizer, "chat_template", None)
    if isinstance(value, Mapping):
        return "\n".join(str(v) for v in value.values())
    return value if isinstance(value, str) else ""


def check_template_kwargs(kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """``chat_template_kwargs`` checked: string keys, JSON values, at most 64 KiB.

    Raises:
        ValueError: Naming the bad key or the size.
    """
    if kwargs is None:
        return {}
    if not isinstance(kwargs, Mapping):
        raise ValueError("chat_template_kwargs must be a mapping of template variables")
    for key in kwargs:
        if not isinstance(key, str) or not key.isidentifier() or key in RESERVED:
            raise ValueError(
                f"chat_template_kwargs: {key!r} is not a usable template variable (an "
                f"identifier, not one of {sorted(RESERVED)})"
            )
    try:
        size = len(json.dumps(dict(kwargs)))
    except (TypeError, ValueError) as e:
        raise ValueError(f"chat_template_kwargs must hold JSON values ({e})") from None
    if size > MAX_TEMPLATE_KWARGS_BYTES:
        raise ValueError(
            f"chat_template_kwargs is {size} bytes; at most {MAX_TEMPLATE_KWARGS_BYTES}"
        )
    return dict(kwargs)


@lru_cache(maxsize=64)
def _tool_grammar(
    fmt: ToolFormat,
    tools: tuple[ToolSpec, ...],
    mode: str,
    parallel: bool,
    specials: tuple[tuple[str, int], ...],
    prefix: str,
    rules: str,
) -> ToolGrammar:
    lark = tool_call_lark(
        fmt, tools, mode=mode, parallel=parallel, specials=dict(specials), prefix=prefix
    )
    names = ", ".join(t.name for t in tools)
    return ToolGrammar(lark + rules, f"ToolGrammar({fmt.name}, {mode}, [{names}])")


def _constraint(
    settings: GenerationSettings,
    fmt: ToolFormat | None,
    tools: tuple[ToolSpec, ...],
    choice: ToolChoice,
    parallel: bool,
    specials: dict[str, int],
    prefix: tuple[str, list[str]] | None,
) -> Constraint | None:
    """The constraint of the request (see the module docstring)."""
    head, rules = prefix if prefix is not None else ("", [])
    if fmt is not None and choice.mode != "none":
        if settings.constraint is not None:
            raise ValueError(
                f"constraint={settings.constraint!r} cannot be combined with tool_choice="
                f"{choice.mode!r} (the tool grammar is the constraint); pass tool_choice='none'"
            )
        chosen = tuple(t for t in tools if choice.name in (None, t.name))
        key = tuple(sorted(specials.items()))
        return _tool_grammar(fmt, chosen, choice.mode, parallel, key, head, "\n".join(rules))
    if prefix is not None and isinstance(settings.constraint, JsonSchema):
        lark = f"start: {head} answer\nanswer: {json_value(settings.constraint.schema)}\n"
        return ToolGrammar(lark + "\n".join([*rules, "TEXT: /(?s:.*)/"]), "AfterReasoning")
    return settings.constraint


def prepare_chat(
    tokenizer: Any,
    messages: Messages,
    *,
    settings: GenerationSettings,
    tools: Sequence[Mapping[str, Any]] | None = None,
    tool_choice: Any = None,
    parallel_tool_calls: bool = True,
    tool_format: str | None = None,
    chat_template_kwargs: Mapping[str, Any] | None = None,
) -> ChatPlan:
    """Resolve a chat request (see the module docstring).

    Raises:
        ValueError: Invalid tools, ``tool_choice``, ``tool_format``, messages or template
            variables, a template that fails, or a constraint combined with a tool choice.
    """
    check_messages(messages)
    specs = check_tools(tools)
    choice = check_tool_choice(tool_choice, specs)
    variables = check_template_kwargs(chat_template_kwargs)
    text = template_text(tokenizer)
    specials = special_tokens(tokenizer)
    fmt = None
    if specs:
        fmt = (
            format_named(tool_format) if tool_format is not None else detect_format(text, specials)
        )
    elif tool_format is not None:
        format_named(tool_format)
    # History with calls renders in the template's own way even when no tools are sent.
    history_fmt = fmt or detect_format(text, specials)
    rendered = template_messages(messages, history_fmt, specs, choice.mode)
    if fmt is not None and fmt.native_tools:
        variables["tools"] = [t.definition for t in specs]
    if not text and not getattr(tokenizer, "has_chat_template", False):
        raise ValueError(
            "messages= needs a chat template, and this tokenizer has none; pass prompt= instead"
        )
    prompt = tokenizer.apply_chat_template(
        rendered, add_generation_prompt=True, tokenize=False, **variables
    )
    ids = list(tokenizer.encode(prompt, add_special_tokens=False))
    if not ids:
        raise ValueError("the rendered prompt is empty")
    syntax = detect_reasoning(text, specials)
    opened = opened_by_prompt(prompt, syntax)
    prefix = None if syntax is None else reasoning_lark(syntax, opened=opened, specials=specials)
    constraint = _constraint(settings, fmt, specs, choice, parallel_tool_calls, specials, prefix)
    new = replace(settings, constraint=constraint)
    if fmt is not None and choice.mode == "none" and fmt.anywhere:
        new = replace(new, bad_words=(*settings.bad_words, fmt.trigger))
    return ChatPlan(prompt, ids, new, fmt, specs, choice, syntax, opened)
