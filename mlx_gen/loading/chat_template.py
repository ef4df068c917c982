"""Chat templates from model folders: found, rendered in a sandbox, errors named.

A chat template is Jinja code shipped by whoever made the model folder. It is only
ever rendered in ``jinja2.sandbox.ImmutableSandboxedEnvironment`` (as transformers
does): no attribute starting with ``_``, no mutation of the values passed in, so
``{{ cycler.__init__.__globals__.os.system(...) }}`` cannot reach Python. A template
the sandbox blocks, or one that does not parse or raises, gives one ``ValueError``
naming the file that holds it (:func:`template_error`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

TOKENIZER_CONFIG_JSON = "tokenizer_config.json"
# The file transformers saves a tokenizer's template in (it wins over tokenizer_config.json).
CHAT_TEMPLATE_JINJA = "chat_template.jinja"


def template_file(folder: Path) -> Path:
    """The file of ``folder`` that holds its chat template, in transformers' precedence."""
    if (folder / CHAT_TEMPLATE_JINJA).is_file():
        return folder / CHAT_TEMPLATE_JINJA
    return folder / TOKENIZER_CONFIG_JSON


def select_template(value: Any, *, source: str) -> str | None:
    """The template text of a ``chat_template`` value: a string, or transformers' list
    of ``{"name", "template"}`` entries (the one named ``"default"``).

    Raises:
        ValueError: Any other value (the file is named).
    """
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(
        isinstance(t, Mapping) and isinstance(t.get("template"), str) for t in value
    ):
        named = {t.get("name"): t["template"] for t in value}
        if "default" in named:
            return named["default"]
    raise ValueError(
        f"{source}: chat_template={str(value)[:80]!r} is invalid (expected a string, or a list "
        'of {"name", "template"} entries with one named "default")'
    )


def template_error(error: Exception, source: str) -> ValueError:
    """One ``ValueError`` for a chat template that failed, naming ``source``.

    Besides Jinja's own errors, a template can raise what its expressions raise
    (``{{ 1 / 0 }}``, ``{{ 'a' * 10**12 }}``): all are the template's fault.
    """
    if isinstance(error, jinja2.exceptions.SecurityError):
        reason = str(error).rstrip(".")
        what = f"was blocked by the sandbox ({reason}); model files may not run code"
    elif isinstance(error, jinja2.TemplateSyntaxError):
        what = f"does not parse (line {error.lineno}: {error.message})"
    elif isinstance(error, jinja2.TemplateError):
        what = f"failed: {error}"
    else:
        what = f"failed ({type(error).__name__}: {error})"
    return ValueError(f"{source}: the chat template {what}")


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def _tojson(
    x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None, sort_keys=False
) -> str:
    # transformers' filter: Jinja's own escapes HTML, which chat templates do not want.
    return json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


@lru_cache(maxsize=32)
def _compile(template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


def render_chat_template(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    source: str,
    add_generation_prompt: bool = False,
    variables: Mapping[str, Any] | None = None,
) -> str:
    """Render ``template`` in the sandbox (the same globals and filters as transformers).

    Args:
        template: The Jinja chat template text.
        messages: The chat, ``[{"role": ..., "content": ...}]``.
        source: The file the template came from, for errors.
        add_generation_prompt: End with the assistant's turn header.
        variables: Further template variables (``bos_token``, ``tools``, ...).

    Raises:
        ValueError: The template is blocked, does not parse or raises anything
            (``source`` named).

    >>> render_chat_template("{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}",
    ...                      [{"role": "user", "content": "hi"}], source="t")
    '<user>hi'
    """
    try:
        return _compile(template).render(
            messages=list(messages),
            add_generation_prompt=add_generation_prompt,
            **dict(variables or {}),
        )
    except Exception as e:  # Only the template runs here: whatever it raises is its fault.
        raise template_error(e, source) from None
