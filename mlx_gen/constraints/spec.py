"""The constraint constructors: what the generated text must match.

Each constructor validates its input once, here, and compiles it to an llguidance
grammar (a JSON string, :attr:`Constraint.grammar`); nothing is checked per token.
Two constraints are equal (and share one compiled grammar in the cache) when their
grammars are equal.

JSON whitespace: between JSON tokens the output may hold at most what
``whitespace`` matches, once per gap (default :data:`DEFAULT_JSON_WHITESPACE`: nothing,
one space, or a newline and up to 20 spaces or tabs of indentation, as llama.cpp's
JSON grammars allow), so a model cannot emit whitespace until ``max_tokens``. Pass
``whitespace=None`` for compact JSON (``{"a":1,"b":[2,3]}``) or another regex.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import llguidance

DEFAULT_JSON_WHITESPACE = r"(?: |\n[ \t]{0,20})?"
_UNIMPLEMENTED = re.compile(r"Unimplemented keys: \[([^\]]*)\]")


class Constraint:
    """Base class: a constraint compiled to an llguidance grammar.

    Attributes:
        grammar: The llguidance grammar (JSON text), the cache key.
        description: A short human-readable form, for messages.
    """

    grammar: str
    description: str

    def __init__(self, grammar: str, description: str) -> None:
        self.grammar = grammar
        self.description = description

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Constraint) and self.grammar == other.grammar

    def __hash__(self) -> int:
        return hash(self.grammar)

    def __repr__(self) -> str:
        return self.description


def _checked(grammar: str, what: str) -> str:
    """``grammar`` if llguidance accepts it; else ``ValueError`` naming ``what`` and the error."""
    message = llguidance.LLMatcher.validate_grammar(grammar)
    if message and not message.startswith("WARNING"):
        unimplemented = _UNIMPLEMENTED.search(message)
        if unimplemented:
            keys = unimplemented.group(1).replace('"', "")
            raise ValueError(
                f"{what}: unsupported JSON Schema keyword(s): {keys} (llguidance "
                f"{llguidance.__version__} cannot enforce them, and mlx_gen never ignores a "
                "keyword silently; remove them from the schema)"
            )
        raise ValueError(f"{what} is invalid: {message.strip()}")
    return grammar


def _schema_dict(schema: Any) -> dict[str, Any]:
    """A JSON Schema as a dict, from a dict, JSON text or a pydantic model class."""
    if isinstance(schema, type) and hasattr(schema, "model_json_schema"):
        return schema.model_json_schema()
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as e:
            raise ValueError(f"JsonSchema: the schema text is not valid JSON ({e})") from None
    if not isinstance(schema, Mapping):
        raise ValueError(
            f"JsonSchema: schema={schema!r} is invalid (expected a dict, JSON text of an "
            "object, or a pydantic model class)"
        )
    return dict(schema)


def _json_grammar(schema: dict[str, Any], whitespace: str | None, what: str) -> str:
    options: dict[str, Any] = {"lenient": False}
    if whitespace is None:
        options["whitespace_flexible"] = False
    else:
        options["whitespace_pattern"] = whitespace
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=options)
    except ValueError as e:
        raise ValueError(f"{what} is invalid: {e}") from None
    return _checked(grammar, what)


class JsonSchema(Constraint):
    """The output is one JSON value valid under a JSON Schema.

    Args:
        schema: A dict, its JSON text, or a pydantic model class (its
            ``model_json_schema()``).
        whitespace: A regex for the whitespace allowed in each gap between JSON tokens
            (default :data:`DEFAULT_JSON_WHITESPACE`); ``None`` allows none.

    Raises:
        ValueError: Not a schema, or a keyword llguidance cannot enforce (named).

    >>> JsonSchema({"type": "object", "properties": {"n": {"type": "integer"}}})
    JsonSchema({"properties": {"n": {"type": "integer"}}, "type": "object"})
    >>> JsonSchema({"type": "array", "uniqueItems": True})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: JsonSchema: unsupported JSON Schema keyword(s): uniqueItems (...)
    """

    def __init__(
        self,
        schema: Mapping[str, Any] | str | type,
        *,
        whitespace: str | None = DEFAULT_JSON_WHITESPACE,
    ) -> None:
        self.schema = _schema_dict(schema)
        self.whitespace = whitespace
        text = json.dumps(self.schema, sort_keys=True)
        grammar = _json_grammar(self.schema, whitespace, "JsonSchema")
        super().__init__(grammar, f"JsonSchema({text})")


class JsonObject(JsonSchema):
    """The output is any JSON object (``{"type": "object"}``).

    >>> JsonObject()
    JsonObject()
    """

    def __init__(self, *, whitespace: str | None = DEFAULT_JSON_WHITESPACE) -> None:
        super().__init__({"type": "object"}, whitespace=whitespace)
        self.description = "JsonObject()"


class Regex(Constraint):
    """The whole output matches a regular expression (llguidance's Rust ``regex`` syntax).

    Args:
        pattern: The regex; it must match the entire output (as ``re.fullmatch``).

    Raises:
        ValueError: Not a string, or a pattern llguidance cannot compile (its message).

    >>> Regex(r"[0-9]{3}")
    Regex('[0-9]{3}')
    """

    def __init__(self, pattern: str) -> None:
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"Regex: pattern={pattern!r} is invalid (expected a non-empty str)")
        grammar = llguidance.LLMatcher.grammar_from_regex(pattern)
        super().__init__(_checked(grammar, f"Regex({pattern!r})"), f"Regex({pattern!r})")
        self.pattern = pattern


class Grammar(Constraint):
    """The output is a sentence of a Lark grammar (llguidance's Lark dialect, rule ``start``).

    Args:
        lark: The grammar text.

    Raises:
        ValueError: A grammar llguidance rejects (its message, with the line).

    >>> Grammar('start: "yes" | "no"')
    Grammar(...)
    """

    def __init__(self, lark: str) -> None:
        if not isinstance(lark, str) or not lark.strip():
            raise ValueError(f"Grammar: lark={lark!r} is invalid (expected Lark grammar text)")
        grammar = llguidance.LLMatcher.grammar_from_lark(lark)
        super().__init__(_checked(grammar, "Grammar"), "Grammar(...)")
        self.lark = lark


class Choice(Constraint):
    """The output is exactly one of the given strings.

    Args:
        choices: Non-empty strings (at least one).

    Raises:
        ValueError: An empty list, a bare string, or a non-string / empty entry (named).

    >>> Choice(["positive", "negative"])
    Choice(['positive', 'negative'])
    """

    def __init__(self, choices: Sequence[str]) -> None:
        if isinstance(choices, str) or not choices:
            raise ValueError(
                f"Choice: choices={choices!r} is invalid (expected a non-empty list of strings)"
            )
        bad = [c for c in choices if not isinstance(c, str) or not c]
        if bad:
            raise ValueError(f"Choice: {bad!r} are not non-empty strings")
        self.choices = tuple(choices)
        # JSON string escapes are valid Lark string literals.
        lark = "start: " + " | ".join(json.dumps(c) for c in self.choices)
        grammar = llguidance.LLMatcher.grammar_from_lark(lark)
        super().__init__(_checked(grammar, "Choice"), f"Choice({list(self.choices)!r})")
