"""Text that enters the command line: argv values, prompt files and standard input.

Every text value is checked for valid UTF-8 and every file read is capped, so that bad
input gives one ``error:`` line naming the flag (and the file), never a traceback from
the tokenizer or a ``MemoryError``:

* Python decodes argv with ``surrogateescape``: an invalid byte arrives as a lone
  surrogate (``'\\udcff'``), which the tokenizer cannot encode. :func:`check_utf8`
  finds it and names the flag and the byte.
* Files and stdin are read as bytes, at most :data:`MAX_INPUT_BYTES`, and decoded
  strictly (``--prompt-file /dev/zero`` is refused at the cap).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any

from mlx_gen.cli.parser import UsageError

#: The most bytes read from a prompt file or stdin (32 MiB): far more than any
#: model's context holds, small enough to refuse an endless file quickly.
MAX_INPUT_BYTES = 32 * 2**20


def check_utf8(flag: str, values: Iterable[str | None]) -> None:
    """Raise :class:`UsageError` if a value of ``flag`` holds bytes that are not UTF-8.

    >>> check_utf8("--prompt", ["fine", None])
    >>> check_utf8("--prompt", ["ab\\udcff"])
    Traceback (most recent call last):
    ...
    mlx_gen.cli.parser.UsageError: argument --prompt: not valid UTF-8 (byte 0xff at character 2)
    """
    for value in values:
        if value is None:
            continue
        for position, char in enumerate(value):
            if "\udc80" <= char <= "\udcff":  # surrogateescape's stand-in for one byte
                byte = ord(char) - 0xDC00
                raise UsageError(
                    f"argument {flag}: not valid UTF-8 (byte {byte:#04x} at character {position})"
                )
            if "\ud800" <= char <= "\udfff":
                raise UsageError(f"argument {flag}: not valid UTF-8 (a lone surrogate)")


# Parsed flags holding text for the tokenizer (dest → values), checked by check_text_flags.
_TEXT_FLAGS = ("prompt", "system", "bad_words", "stop", "score", "logit_bias_text",
               "tool_choice", "chat_template_kwargs", "thinking_end_message")  # fmt: skip


def check_text_flags(values: Mapping[str, Any]) -> None:
    """:func:`check_utf8` on every text flag of the parsed namespace ``values``."""
    for dest in _TEXT_FLAGS:
        value = values.get(dest)
        items = value if isinstance(value, list) else [value]
        texts = [v[0] if isinstance(v, tuple) else v for v in items]  # (TEXT, BIAS) pairs
        check_utf8("--" + dest.replace("_", "-"), texts)


def read_text(path: str, *, flag: str = "--prompt-file") -> str:
    """The UTF-8 text of ``path`` (``"-"``: standard input), at most :data:`MAX_INPUT_BYTES`.

    Raises:
        UsageError: The file cannot be read, is larger than the cap, or is not UTF-8;
            the message names ``flag`` and the path.
    """
    name = "standard input" if path == "-" else repr(path)
    if path == "-" and sys.stdin is None:
        raise UsageError(f"argument {flag}: standard input is closed")
    if path == "-" and not hasattr(sys.stdin, "buffer"):  # a text stream (tests, embedding)
        text = sys.stdin.read(MAX_INPUT_BYTES + 1)
        data = text.encode("utf-8", "surrogateescape")
        return _decoded(data, flag, name)
    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
        else:
            with open(path, "rb") as fh:
                data = fh.read(MAX_INPUT_BYTES + 1)
    except OSError as e:
        raise UsageError(f"argument {flag}: cannot read {name} ({e.strerror or e})") from None
    return _decoded(data, flag, name)


def _decoded(data: bytes, flag: str, name: str) -> str:
    if len(data) > MAX_INPUT_BYTES:
        raise UsageError(
            f"argument {flag}: {name} is larger than {MAX_INPUT_BYTES // 2**20} MiB, the most "
            "mlx-gen reads"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(
            f"argument {flag}: {name} is not valid UTF-8 (byte {data[e.start]:#04x} at "
            f"offset {e.start})"
        ) from None
