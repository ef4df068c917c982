"""What the chat path supports of tools and reasoning, and the one gate for the rest.

The Anthropic and Responses surfaces map ``tools``, ``tool_choice``, tool calls and tool
results in the history, and thinking budgets onto the chat request's fields (chat
``tools`` / ``tool_choice``, assistant ``tool_calls`` and ``reasoning_content``, ``tool``
role messages with ``tool_call_id``, ``thinking_budget``, ``reasoning_effort``), and
the chat path generates with all of them (tool grammars and the thinking budget,
:mod:`mlx_gen.tools`). The flags stay the one switch: with one off, :func:`unsupported`
names the first feature a mapped request uses and each surface answers a 400 naming its
own field (and ``/v1/models`` says so).
"""

from __future__ import annotations

from typing import Any

from mlx_gen.controls import think_marker_ids
from mlx_gen.loading.loader import LoadedModel
from mlx_gen.tools.formats import detect_format
from mlx_gen.tools.grammar import special_tokens
from mlx_gen.tools.request import template_text

#: The chat path generates tool calls (``tools``, ``tool_choice``, tool history).
TOOLS_SUPPORTED = True
#: The chat path generates reasoning with a budget (``thinking_budget``).
THINKING_SUPPORTED = True


def model_capabilities(model: LoadedModel) -> dict[str, bool | str | None]:
    """What ``model`` supports through this server (``/v1/models`` lists it).

    Structured output (JSON schema, regex, grammar) works with every model. ``tools``:
    every model calls tools (in ``tool_format``, the family its chat template speaks, or
    ``generic`` JSON); ``reasoning``: the vocabulary has ``<think>`` and ``</think>`` as
    single tokens (a thinking budget needs them). Both need their switch on (see the
    module docstring). Reads the tokenizer: call it once, not per request.
    """
    tokenizer = model.tokenizer
    fmt = detect_format(template_text(tokenizer), special_tokens(tokenizer))
    return {
        "structured_output": True,
        "tools": TOOLS_SUPPORTED,
        "tool_format": fmt.name if TOOLS_SUPPORTED else None,
        "reasoning": THINKING_SUPPORTED and think_marker_ids(tokenizer) is not None,
    }


def unsupported(chat: dict[str, Any]) -> str | None:
    """The first chat feature of the mapped request ``chat`` switched off, or ``None``.

    Returns one of ``"tools"``, ``"tool_choice"``, ``"tool_calls"`` (an assistant
    message with tool calls), ``"tool"`` (a tool-result message), ``"thinking_budget"``.

    >>> unsupported({"messages": [{"role": "user", "content": "hi"}]}) is None
    True
    >>> unsupported({"messages": [], "tools": [{"type": "function"}]}) is None  # supported
    True
    """
    if not TOOLS_SUPPORTED:
        if chat.get("tools"):
            return "tools"
        if chat.get("tool_choice") not in (None, "none"):
            return "tool_choice"
        for message in chat.get("messages", ()):
            if message.get("tool_calls"):
                return "tool_calls"
            if message.get("role") == "tool":
                return "tool"
    if not THINKING_SUPPORTED and chat.get("thinking_budget") is not None:
        return "thinking_budget"
    return None
