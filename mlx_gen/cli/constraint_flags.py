"""The structured-output flags: ``--json-schema``, ``--regex``, ``--grammar``, ``--choice``.

At most one may be given (the parser's mutually exclusive group). Each becomes one
constraint of :mod:`mlx_gen.constraints`; a file that cannot be read or a constraint
that does not compile raises :class:`UsageError` naming the flag.
"""

from __future__ import annotations

from typing import Any

from mlx_gen.cli.parser import UsageError
from mlx_gen.constraints import Choice, Constraint, Grammar, JsonSchema, Regex

CONSTRAINT_FLAGS = ("json_schema", "regex", "grammar", "choice")


def _read(flag: str, path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError as e:
        raise UsageError(f"argument {flag}: cannot read {path!r} ({e.strerror})") from None


def constraint_from_flags(values: dict[str, Any]) -> Constraint | None:
    """The constraint the parsed flags ``values`` ask for, else ``None``.

    Raises:
        UsageError: An unreadable file or an invalid schema, pattern, grammar or choice.
    """
    flag, make = None, None
    if values["json_schema"] is not None:
        text = values["json_schema"]
        text = text if text.lstrip().startswith("{") else _read("--json-schema", text)
        flag, make = "--json-schema", lambda: JsonSchema(text)
    elif values["regex"] is not None:
        flag, make = "--regex", lambda: Regex(values["regex"])
    elif values["grammar"] is not None:
        lark = _read("--grammar", values["grammar"])
        flag, make = "--grammar", lambda: Grammar(lark)
    elif values["choice"] is not None:
        flag, make = "--choice", lambda: Choice(values["choice"])
    if make is None:
        return None
    try:
        return make()
    except ValueError as e:
        raise UsageError(f"argument {flag}: {e}") from None
