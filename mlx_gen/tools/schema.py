"""Tool definitions and ``tool_choice``, validated once at the boundary.

Tools are OpenAI function definitions::

    {"type": "function", "function": {"name": "get_weather", "description": "...",
                                      "parameters": {JSON Schema of an object}}}

Every ``parameters`` schema is compiled by llguidance here (as
:class:`~mlx_gen.constraints.JsonSchema` does), so a schema keyword that cannot be
enforced is an error naming the tool and the keyword, never ignored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from mlx_gen.constraints import JsonSchema

MAX_TOOLS = 128
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
CHOICE_MODES = ("auto", "required", "none")
EMPTY_OBJECT: dict[str, Any] = {"type": "object", "properties": {}}


@dataclass(frozen=True, eq=False)
class ToolSpec:
    """One declared tool.

    Attributes:
        name: Its name (``[A-Za-z_][A-Za-z0-9_.-]*``, at most 64 characters).
        description: What it does ('' when not given).
        parameters: The JSON Schema of its arguments (an object schema).
        definition: The OpenAI definition as given (what chat templates receive).
    """

    name: str
    description: str
    parameters: dict[str, Any]
    definition: dict[str, Any]

    @property
    def key(self) -> str:
        """The definition as canonical JSON text (equality, hashing, cache keys)."""
        return json.dumps(self.definition)  # key order matters: it is the call's order

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ToolSpec) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)


@dataclass(frozen=True)
class ToolChoice:
    """What the model may do: ``mode`` is ``auto``, ``required`` or ``none``; ``name``
    restricts ``required`` to one tool (OpenAI's named form)."""

    mode: str
    name: str | None = None


@lru_cache(maxsize=1024)
def _checked_schema(text: str) -> None:
    """Compile a parameters schema once (llguidance refuses what it cannot enforce)."""
    JsonSchema(json.loads(text))


def check_tool(tool: Any, where: str) -> ToolSpec:
    """One OpenAI function definition as a :class:`ToolSpec`.

    Raises:
        ValueError: Naming ``where`` (e.g. ``tools[0].function.parameters``) and why.
    """
    if not isinstance(tool, Mapping):
        raise ValueError(f"{where} is a {type(tool).__name__}; expected a function definition")
    if tool.get("type", "function") != "function":
        raise ValueError(f"{where}.type={tool.get('type')!r} is invalid (only 'function')")
    function = tool.get("function")
    if not isinstance(function, Mapping):
        raise ValueError(
            f"{where}.function is missing (expected {{'name': ..., 'parameters': ...}})"
        )
    name = function.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise ValueError(
            f"{where}.function.name={name!r} is invalid (expected letters, digits, '_', '.', "
            "'-', starting with a letter or '_', at most 64 characters)"
        )
    description = function.get("description") or ""
    if not isinstance(description, str):
        raise ValueError(f"{where}.function.description must be a string")
    parameters = function.get("parameters", EMPTY_OBJECT)
    if not isinstance(parameters, Mapping) or parameters.get("type", "object") != "object":
        raise ValueError(
            f"{where}.function.parameters={str(parameters)[:80]} is invalid (expected a JSON "
            'Schema of an object, {"type": "object", "properties": {...}})'
        )
    try:
        _checked_schema(json.dumps(parameters, sort_keys=True))
    except (ValueError, TypeError) as e:
        raise ValueError(f"{where}.function.parameters: {e}") from None
    definition = {"type": "function", "function": dict(function)}
    return ToolSpec(name, description, dict(parameters), definition)


def check_tools(tools: Sequence[Any] | None) -> tuple[ToolSpec, ...]:
    """Validate a ``tools`` list (at most :data:`MAX_TOOLS`, names unique).

    Raises:
        ValueError: Naming the bad entry (``tools[i]...``).

    >>> [t.name for t in check_tools([{"type": "function", "function": {"name": "f"}}])]
    ['f']
    """
    if tools is None:
        return ()
    if isinstance(tools, (str, Mapping)) or not isinstance(tools, Sequence):
        raise ValueError(
            f"tools must be a list of function definitions, not {type(tools).__name__}"
        )
    if len(tools) > MAX_TOOLS:
        raise ValueError(f"tools has {len(tools)} entries; at most {MAX_TOOLS} are allowed")
    specs = tuple(check_tool(t, f"tools[{i}]") for i, t in enumerate(tools))
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"tools: the names {dupes} are declared more than once")
    return specs


def check_tool_choice(choice: Any, tools: Sequence[ToolSpec]) -> ToolChoice:
    """``tool_choice`` as a :class:`ToolChoice`.

    Accepts ``"auto"``, ``"required"``, ``"none"``, OpenAI's named form
    ``{"type": "function", "function": {"name": NAME}}``, or a bare declared tool name.
    ``None`` is ``auto`` with tools and ``none`` without.

    Raises:
        ValueError: An unknown mode, or a name that is not a declared tool (named).
    """
    if choice is None:
        return ToolChoice("auto" if tools else "none")
    names = [t.name for t in tools]
    if isinstance(choice, Mapping):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, Mapping) else None
        if choice.get("type") != "function" or not isinstance(name, str):
            raise ValueError(
                f"tool_choice={dict(choice)!r} is invalid (expected 'auto', 'required', 'none' "
                'or {"type": "function", "function": {"name": ...}})'
            )
        choice = name
    elif not isinstance(choice, str):
        raise ValueError(f"tool_choice={choice!r} is invalid (expected a string or a mapping)")
    elif choice in CHOICE_MODES:
        if choice != "none" and not tools:
            raise ValueError(f"tool_choice={choice!r} needs tools; none were declared")
        return ToolChoice(choice)
    if choice not in names:
        raise ValueError(
            f"tool_choice names {choice!r}, which is not a declared tool (declared: {names})"
        )
    return ToolChoice("required", choice)
