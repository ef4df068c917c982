"""The structured-output flags: ``--json-schema``, ``--regex``, ``--grammar``, ``--choice``.

At most one may be given (the parser's mutually exclusive group). Each becomes one
constraint of :mod:`mlx_gen.constraints`; a file that cannot be read or a constraint
that does not compile raises :class:`UsageError` naming the flag. Files are read as
``--prompt-file`` is (:func:`~mlx_gen.cli.input_text.read_text`): at most 32 MiB, strict
UTF-8, flag and file named.
"""

from __future__ import annotations

from typing import Any

from mlx_gen.cli.input_text import check_utf8, read_text
from mlx_gen.cli.parser import UsageError
from mlx_gen.constraints import Choice, Constraint, Grammar, JsonSchema, Regex

CONSTRAINT_FLAGS = ("json_schema", "regex", "grammar", "choice")


def constraint_from_flags(values: dict[str, Any]) -> Constraint | None:
    """The constraint the parsed flags ``values`` ask for, else ``None``.

    Raises:
        UsageError: An unreadable file or an invalid schema, pattern, grammar or choice.
    """
    flag, make = None, None
    for dest in CONSTRAINT_FLAGS:
        value = values[dest]
        check_utf8("--" + dest.replace("_", "-"), value if isinstance(value, list) else [value])
    if values["json_schema"] is not None:
        text = values["json_schema"]
        text = text if text.lstrip().startswith("{") else read_text(text, flag="--json-schema")
        flag, make = "--json-schema", lambda: JsonSchema(text)
    elif values["regex"] is not None:
        flag, make = "--regex", lambda: Regex(values["regex"])
    elif values["grammar"] is not None:
        lark = read_text(values["grammar"], flag="--grammar")
        flag, make = "--grammar", lambda: Grammar(lark)
    elif values["choice"] is not None:
        flag, make = "--choice", lambda: Choice(values["choice"])
    if make is None:
        return None
    try:
        return make()
    except ValueError as e:
        raise UsageError(f"argument {flag}: {e}") from None
