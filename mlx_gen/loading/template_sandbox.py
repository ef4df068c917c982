"""The bounded Jinja sandbox chat templates render in: no code, and bounded CPU and memory.

Jinja's ``ImmutableSandboxedEnvironment`` keeps a template away from Python, but not
from the CPU or memory: ``{{ (7**999999999) % 10 }}`` runs for minutes inside one C
call (Ctrl-C cannot stop it), ``{{ 'ab' * 200000000 }}`` takes gigabytes. Here a
template also meets these bounds, each a :class:`TemplateLimitError`:

* ``**``, ``*`` on integers: a result over :data:`MAX_INT_BITS` bits is refused before
  it is computed;
* ``*``, ``+`` and ``%`` on strings and lists, ``format``, and any call: a result over
  :data:`MAX_CHARS` items, a width/precision or an integer argument over it, refused
  before it is built;
* the rendered text: at most :data:`MAX_CHARS` characters (rendering streams and stops
  at the cap);
* time: :data:`TIME_BUDGET_S` seconds per render (:func:`time_budget`), which stops
  Python-level loops too (``range`` is capped at 100,000 items by Jinja, but nested
  loops multiply).

The globals and filters are transformers' (``raise_exception``, ``strftime_now``,
``tojson``, ``dict``, ``namespace``, the ``{% generation %}`` tag), so a template that
renders with transformers renders the same here.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import re
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.utils
from jinja2.sandbox import ImmutableSandboxedEnvironment

#: The most characters (or list items) a template may render or build in one value:
#: twice the largest prompt file the CLI reads (32 MiB), so any real chat fits.
MAX_CHARS = 64 * 2**20
#: The most bits an integer a template computes with ``**`` or ``*`` may have.
MAX_INT_BITS = 4096
#: The most seconds one render may take.
TIME_BUDGET_S = 5.0

# A width or precision in a %-format or a str.format spec ("%999999999d", "{:>99999999}").
_WIDTHS = re.compile(r"%[-+ #0]*(\d+)(?:\.(\d+))?|[:.](\d{4,})")


class TemplateLimitError(jinja2.exceptions.SecurityError):
    """A template went past one of this module's bounds (the bound is named)."""


def _number(n: int) -> str:
    return f"{n:,}" if n < 10**15 else f"about 2**{n.bit_length() - 1}"


def _check_size(n: int, what: str) -> None:
    if n > MAX_CHARS:
        raise TemplateLimitError(
            f"{what} would have {_number(n)} items, more than the limit of {MAX_CHARS:,}"
        )


def _check_format(spec: Any) -> None:
    if isinstance(spec, str):
        for match in _WIDTHS.finditer(spec):
            for digits in match.groups():
                if digits is not None:
                    _check_size(int(digits), f"the format width {digits}")


def _bits(x: Any) -> int:
    return abs(x).bit_length() if isinstance(x, int) else 0


def _check_int_bits(bits: int, what: str) -> None:
    if bits > MAX_INT_BITS:
        raise TemplateLimitError(
            f"{what} would have about {bits:,} bits, more than the limit of {MAX_INT_BITS:,}"
        )


def _length(x: Any) -> int:
    return len(x) if isinstance(x, (str, list, tuple)) else 0


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """``ImmutableSandboxedEnvironment`` whose ``**``, ``*``, ``+``, ``%`` and calls are bounded.

    >>> env = BoundedSandbox()
    >>> env.from_string("{{ 2 ** 10 }} {{ 'ab' * 2 }}").render()
    '1024 abab'
    >>> env.from_string("{{ 7 ** 999999999 }}").render()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mlx_gen...TemplateLimitError: 7 ** 999999999 would have about 2,999,999,997 bits, ...
    """

    intercepted_binops = frozenset({"**", "*", "+", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        """Refuse an operation whose result would pass a bound; else compute it."""
        if operator == "**" and isinstance(left, int) and isinstance(right, int):
            if right > 0 and abs(left) > 1:
                _check_int_bits(right * _bits(left), f"{left} ** {right}")
        elif operator == "*":
            if isinstance(left, int) and isinstance(right, int):
                _check_int_bits(_bits(left) + _bits(right), "an integer product")
            for seq, n in ((left, right), (right, left)):
                if _length(seq) and isinstance(n, int):
                    _check_size(_length(seq) * n, "a repeated string or list")
        elif operator == "+":
            _check_size(_length(left) + _length(right), "a joined string or list")
        elif operator == "%" and isinstance(left, str):
            _check_format(left)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        """Refuse a string or list method called with a width, count or format spec over
        :data:`MAX_CHARS` (``'a'.center(10**9)``, ``'{:>999999999}'.format(1)``)."""
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, (str, list)):
            for value in (*args, *kwargs.values()):
                if isinstance(value, int) and not isinstance(value, bool):
                    _check_size(value, f"the argument {_number(value)} of {__obj.__name__}()")
                _check_format(value)
            if __obj.__name__ in ("format", "format_map"):  # the spec holds widths
                _check_format(owner)
        return super().call(__context, __obj, *args, **kwargs)


class _GenerationTag(jinja2.ext.Extension):
    """transformers' ``{% generation %}...{% endgeneration %}``: here it renders its body."""

    tags = {"generation"}

    def parse(self, parser: Any) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Any) -> str:
        return caller()


class _Namespace(jinja2.utils.Namespace):
    """``namespace(...)`` as transformers gives it: no ``_`` names, bounded values."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # Jinja's signature trick (self in args)
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name, value in attrs.items():
            _Namespace._check(name, value)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _Namespace._check(name, value)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name: Any, value: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                f"a namespace may not hold underscore-prefixed names ({name!r})"
            )
        _check_size(_length(value), f"namespace value {name!r}")


class _TemplateDict:
    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
        return dict.fromkeys(*args, **kwargs)


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def _tojson(
    x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None, sort_keys=False
) -> str:
    # transformers' filter: Jinja's own escapes HTML, which chat templates do not want.
    return json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _format(value: Any, *args: Any, **kwargs: Any) -> str:
    _check_format(value)
    return jinja2.filters.do_format(value, *args, **kwargs)


def bounded_environment() -> BoundedSandbox:
    """A :class:`BoundedSandbox` with transformers' chat-template globals and filters."""
    env = BoundedSandbox(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.filters["format"] = _format
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _Namespace
    return env


class _OutOfTime(BaseException):
    """Raised inside the rendering thread when its time budget is spent."""


@contextlib.contextmanager
def time_budget(seconds: float | None = None) -> Iterator[None]:
    """Stop the code in the block with :class:`TemplateLimitError` after ``seconds``
    (``None``: :data:`TIME_BUDGET_S`).

    A timer thread raises an exception asynchronously in this thread; Python delivers
    it between bytecodes, so it stops loops, not one long C call (the bounds of
    :class:`BoundedSandbox` keep those short).
    """
    seconds = TIME_BUDGET_S if seconds is None else seconds
    thread_id, lock, state = threading.get_ident(), threading.Lock(), {"done": False}

    def expire() -> None:
        with lock:
            if not state["done"]:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(thread_id), ctypes.py_object(_OutOfTime)
                )

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    try:
        try:
            timer.start()
            yield
        finally:
            with lock:
                state["done"] = True
            timer.cancel()
            # Clear an exception the timer set but Python has not delivered yet.
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), None)
    except _OutOfTime:
        raise TemplateLimitError(
            f"rendering took longer than the limit of {seconds:g} seconds"
        ) from None


def render_bounded(template: jinja2.Template, variables: dict[str, Any]) -> str:
    """Render ``template`` (compiled by :func:`bounded_environment`) within every bound.

    Raises:
        TemplateLimitError: A bound was passed.
        Exception: Whatever else the template raises.
    """
    chunks, total = [], 0
    with time_budget():
        for chunk in template.generate(**variables):
            total += len(chunk)
            if total > MAX_CHARS:
                raise TemplateLimitError(
                    f"the rendered text is longer than the limit of {MAX_CHARS:,} characters"
                )
            chunks.append(chunk)
    return "".join(chunks)
