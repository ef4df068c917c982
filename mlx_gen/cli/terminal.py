"""Model text written to a terminal: control characters are shown, not obeyed.

A model can generate any byte, including ESC sequences that move the cursor, retitle
the window or rewrite what was printed, BEL, or a carriage return that hides the
start of a line. When stdout is a terminal, :func:`for_terminal` shows such
characters escaped (``\\x1b``); newline and tab pass. When stdout is a pipe or a file
the text is written raw, byte for byte what the model produced (the program reading
it decides). ``--json`` escapes C0 characters itself; on a terminal DEL and C1
characters are escaped too, as ``\\u009b``, which keeps the document valid JSON.
"""

from __future__ import annotations

from typing import TextIO

# C0 controls but newline and tab, DEL, and C1 controls (0x9b is a one-byte CSI).
_CONTROLS = [c for c in range(0x20) if c not in (0x09, 0x0A)] + list(range(0x7F, 0xA0))
_TEXT = {c: f"\\x{c:02x}" for c in _CONTROLS}
_JSON = {c: f"\\u{c:04x}" for c in _CONTROLS}


def escape_controls(text: str, *, json: bool = False) -> str:
    r"""``text`` with control characters (not newline or tab) escaped.

    >>> escape_controls("a\x1b[2Jb\x07\n")
    'a\\x1b[2Jb\\x07\n'
    >>> escape_controls("\x9b", json=True)
    '\\u009b'
    """
    return text.translate(_JSON if json else _TEXT)


def for_terminal(stream: TextIO, text: str, *, json: bool = False) -> str:
    """``text`` escaped when ``stream`` is a terminal, else unchanged."""
    isatty = getattr(stream, "isatty", None)
    return escape_controls(text, json=json) if isatty is not None and isatty() else text
