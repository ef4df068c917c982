"""A tool-call format as data: its markers, its call syntax, how templates receive tools.

A call section is ``section_open (call_open header ARGS footer call_close)`` with
``separator`` between calls and ``section_close`` at its end, where ``header`` and
``footer`` spell the tool's name around its arguments (``{name}`` stands for it). The
first piece of the section is its **trigger**: where a lazy (``auto``) grammar arms.
``args`` says how the arguments are written: ``json`` (a JSON object), ``pythonic``
(``name(a=1, b="x")``) or ``xml`` (``<parameter=k>\\nvalue\\n</parameter>`` lines).
"""

from __future__ import annotations

from dataclasses import dataclass

ARGS_KINDS = ("json", "pythonic", "xml")


@dataclass(frozen=True)
class ToolFormat:
    """One family's tool-call syntax.

    Attributes:
        name: The ``tool_format=`` name.
        example: One call in this syntax, for documentation.
        section_open, call_open, header, footer, call_close, separator, section_close:
            The literal pieces (tuples of strings; a piece that is a special token of
            the vocabulary is matched as that token). ``header``/``footer`` may hold
            ``{name}``.
        args: ``json``, ``pythonic`` or ``xml``.
        anywhere: Calls may follow free text (the trigger is a marker); else a call
            section is the whole answer and text may not start like the trigger.
        single_call: The syntax holds at most one call.
        native_tools: The chat template renders ``tools=`` itself; else the tools are
            described in a system message (the generic format).
        arguments_text: The template writes a history call's ``function.arguments`` as
            text (DeepSeek V3.1 concatenates it), so it receives the JSON string; else a
            mapping.
        response: For an envelope format (generic), the Lark rule of a plain answer.
        template_markers: Substrings of a chat template that identify the family
            (all must be present).
        vocab_markers: Tokens whose presence in the vocabulary identify the family.
    """

    name: str
    example: str
    section_open: tuple[str, ...] = ()
    call_open: tuple[str, ...] = ()
    header: tuple[str, ...] = ()
    footer: tuple[str, ...] = ()
    call_close: tuple[str, ...] = ()
    separator: tuple[str, ...] = ()
    section_close: tuple[str, ...] = ()
    args: str = "json"
    anywhere: bool = True
    single_call: bool = False
    native_tools: bool = True
    arguments_text: bool = False
    response: str | None = None
    template_markers: tuple[str, ...] = ()
    vocab_markers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        assert self.args in ARGS_KINDS, self.args
        assert self.section_open or self.call_open, self.name

    @property
    def trigger(self) -> str:
        """The first piece of a call section (what arms an ``auto`` grammar)."""
        return (self.section_open or self.call_open)[0]

    def opening(self) -> tuple[str, ...]:
        """Every piece from the section start to the tool name."""
        return (*self.section_open, *self.call_open)

    def head(self, name: str) -> tuple[str, ...]:
        """The header pieces with ``name`` filled in."""
        return tuple(p.replace("{name}", name) for p in self.header)

    def tail(self, name: str) -> tuple[str, ...]:
        """The footer pieces with ``name`` filled in."""
        return tuple(p.replace("{name}", name) for p in self.footer)
