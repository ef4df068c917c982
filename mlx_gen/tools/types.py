"""What tool calling produces: a parsed call, a parsed answer, and the typed stream pieces.

A streamed answer is a sequence of pieces: :class:`ReasoningDelta` and
:class:`ContentDelta` carry text; a call starts with one :class:`ToolCallStart` (its
index, id and name) followed by :class:`ToolCallArguments` fragments whose
concatenation is the call's final ``arguments_json`` (every prefix is a prefix of it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ToolCall:
    """One parsed tool call.

    Attributes:
        id: A call id (``call_`` and 24 hex digits, unique per call), echoed back by
            the ``tool`` message that answers it (``tool_call_id``).
        name: The tool's name (one of the declared tools).
        arguments: The arguments, parsed.
        arguments_json: The arguments as the exact JSON text the model produced (for a
            non-JSON call syntax, its JSON rendering).
    """

    id: str
    name: str
    arguments: dict[str, Any]
    arguments_json: str

    def to_openai(self) -> dict[str, Any]:
        """The call as an OpenAI ``tool_calls`` entry (``arguments`` as a JSON string)."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments_json},
        }


@dataclass(frozen=True)
class ContentDelta:
    """Answer text (outside reasoning and calls)."""

    text: str


@dataclass(frozen=True)
class ReasoningDelta:
    """Reasoning text (inside the think block, markers excluded)."""

    text: str


@dataclass(frozen=True)
class ToolCallStart:
    """A call begins: ``index`` counts calls from 0 in this answer."""

    index: int
    id: str
    name: str


@dataclass(frozen=True)
class ToolCallArguments:
    """The next fragment of call ``index``'s arguments JSON text."""

    index: int
    fragment: str


StreamPiece = ContentDelta | ReasoningDelta | ToolCallStart | ToolCallArguments


@dataclass(frozen=True)
class ParsedOutput:
    """An answer split into its parts.

    Attributes:
        content: The answer text (reasoning and call syntax removed).
        reasoning: The reasoning text, or ``None`` when the answer had no think block.
        tool_calls: The calls, in order.
    """

    content: str
    reasoning: str | None = None
    tool_calls: tuple[ToolCall, ...] = field(default_factory=tuple)


def parse_arguments(text: str) -> dict[str, Any]:
    """``text`` as a JSON object (the arguments of a call).

    Raises:
        ValueError: Not JSON, or JSON that is not an object.

    >>> parse_arguments('{"city": "Paris"}')
    {'city': 'Paris'}
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"tool call arguments are not valid JSON ({e}): {text[:80]!r}") from None
    if not isinstance(value, dict):
        raise ValueError(f"tool call arguments must be a JSON object, not {text[:80]!r}")
    return value
