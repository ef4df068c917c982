"""The command line's chat request: ``--tools``, ``--tool-choice``, template variables,
``--show-prompt``, and how tool calls and reasoning are printed.

A chat prompt (``--chat``) goes through :func:`~mlx_gen.tools.prepare_chat`, as the
Python API does; every error it raises becomes a :class:`UsageError` naming the flag.
"""

from __future__ import annotations

import json
from typing import Any

import mlx_gen as mg
from mlx_gen.cli.input_text import read_text
from mlx_gen.cli.parser import UsageError
from mlx_gen.tools import ChatPlan, ParsedOutput, prepare_chat


def read_tools(path: str) -> list[Any]:
    """The JSON list of ``--tools FILE`` (read with the 32 MiB cap).

    Raises:
        UsageError: Unreadable, not JSON, or not a list (the file is named).
    """
    text = read_text(path, flag="--tools")
    try:
        tools = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"argument --tools: {path!r} is not JSON ({e})") from None
    if not isinstance(tools, list):
        raise UsageError(
            f"argument --tools: {path!r} must hold a JSON list of function definitions"
        )
    return tools


def template_kwargs(text: str | None) -> dict[str, Any] | None:
    """``--chat-template-kwargs`` as a mapping.

    Raises:
        UsageError: Not a JSON object.
    """
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"argument --chat-template-kwargs: not JSON ({e})") from None
    if not isinstance(value, dict):
        raise UsageError("argument --chat-template-kwargs: expected a JSON object")
    return value


def chat_plan(
    options: Any, model: mg.LoadedModel, settings: mg.GenerationSettings, prompt: str
) -> ChatPlan:
    """The resolved chat request of the command line (``options`` is a ``CliOptions``).

    Raises:
        UsageError: No chat template, or a bad ``--tools``/``--tool-choice``/
            ``--tool-format``/``--chat-template-kwargs`` value (named).
    """
    if not getattr(model.tokenizer, "chat_template", None):
        raise UsageError(
            "--chat needs a chat template, and this model's tokenizer has none "
            "(drop --chat to send the prompt as plain text)"
        )
    system = [{"role": "system", "content": options.system}] if options.system else []
    tools = read_tools(options.tools_file) if options.tools_file is not None else None
    try:
        return prepare_chat(
            model.tokenizer,
            [*system, {"role": "user", "content": prompt}],
            settings=settings,
            tools=tools,
            tool_choice=options.tool_choice,
            parallel_tool_calls=options.parallel_tool_calls,
            tool_format=options.tool_format,
            chat_template_kwargs=template_kwargs(options.chat_template_kwargs),
        )
    except ValueError as e:
        flag = "--tools" if "tool" in str(e) else "--chat"
        raise UsageError(f"argument {flag}: {e}") from None


def parse_answer(plan: ChatPlan, text: str) -> ParsedOutput:
    """``text`` (a whole answer) split by ``plan``'s parser."""
    parser = plan.parser()
    parser.feed(text)
    parser.finish()
    return parser.result()


def answer_json(parsed: ParsedOutput) -> dict[str, Any]:
    """The ``--json`` keys of a chat answer: ``content``, ``reasoning``, ``tool_calls``."""
    return {
        "content": parsed.content,
        "reasoning": parsed.reasoning,
        "tool_calls": [c.to_openai() for c in parsed.tool_calls],
    }


def call_lines(parsed: ParsedOutput) -> list[str]:
    """One line per tool call, for the terminal."""
    return [f"tool call {c.id}: {c.name} {c.arguments_json}" for c in parsed.tool_calls]
