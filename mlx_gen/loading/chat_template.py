"""Chat templates from model folders: found, rendered in a sandbox, errors named.

A chat template is Jinja code shipped by whoever made the model folder. It is only
ever rendered in a ``jinja2.sandbox.ImmutableSandboxedEnvironment`` (as transformers
does): no attribute starting with ``_``, no mutation of the values passed in, so
``{{ cycler.__init__.__globals__.os.system(...) }}`` cannot reach Python; and within
bounds of CPU, memory and time (:mod:`mlx_gen.loading.template_sandbox`). A template
the sandbox blocks, that passes a bound, or that does not parse or raises, gives one
``ValueError`` naming the file that holds it (:func:`template_error`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from mlx_gen.loading.template_sandbox import TemplateLimitError, bounded_environment, render_bounded

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
    if isinstance(error, TemplateLimitError):
        what = f'went past a limit ({error}); see README "Security" for the bounds'
    elif isinstance(error, jinja2.exceptions.SecurityError):
        reason = str(error).rstrip(".")
        what = f"was blocked by the sandbox ({reason}); model files may not run code"
    elif isinstance(error, jinja2.TemplateSyntaxError):
        what = f"does not parse (line {error.lineno}: {error.message})"
    elif isinstance(error, jinja2.TemplateError):
        what = f"failed: {error}"
    else:
        what = f"failed ({type(error).__name__}: {error})"
    return ValueError(f"{source}: the chat template {what}")


@lru_cache(maxsize=32)
def _compile(template: str) -> jinja2.Template:
    return bounded_environment().from_string(template)


def _render(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    add_generation_prompt: bool,
    variables: Mapping[str, Any] | None,
) -> str:
    return render_bounded(
        _compile(template),
        {
            **dict(variables or {}),
            "messages": list(messages),
            "add_generation_prompt": add_generation_prompt,
        },
    )


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
        ValueError: The template is blocked, goes past a bound of
            :mod:`mlx_gen.loading.template_sandbox`, does not parse or raises anything
            (``source`` named).

    >>> render_chat_template("{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}",
    ...                      [{"role": "user", "content": "hi"}], source="t")
    '<user>hi'
    """
    try:
        return _render(template, messages, add_generation_prompt, variables)
    except Exception as e:  # Only the template runs here: whatever it raises is its fault.
        raise template_error(e, source) from None


def check_template_bounds(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    source: str,
    add_generation_prompt: bool,
    variables: Mapping[str, Any],
) -> None:
    """Render ``template`` in the bounded sandbox only to see that it stays within bounds.

    For a template another renderer (transformers) will render: on the same template
    and values it does the same work, so a template that ends within the bounds here
    is safe to render there. Errors other than a passed bound are left to that
    renderer to report (its message, its globals).

    Raises:
        ValueError: The template passed a bound of
            :mod:`mlx_gen.loading.template_sandbox` (``source`` and the bound named).
    """
    try:
        _render(template, messages, add_generation_prompt, variables)
    except TemplateLimitError as e:
        raise template_error(e, source) from None
    except Exception:  # noqa: S110 -- the real renderer reports it, in its own words
        pass
