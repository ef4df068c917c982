"""Think blocks: which markers a model uses, whether the prompt opened one, and the
grammar prefix that lets the reasoning run free before a tool grammar or constraint.

A model reasons between ``<think>`` and ``</think>``. Some templates open the block
themselves (the rendered prompt ends with ``<think>``); then the answer starts inside
it. Markers inside the reasoning are never calls: the grammar only arms after the end
marker, and the parser only looks for calls there.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from mlx_gen.tools.grammar import Pieces


@dataclass(frozen=True)
class ReasoningSyntax:
    """A model's think-block markers."""

    start: str = "<think>"
    end: str = "</think>"


THINK = ReasoningSyntax()


def detect_reasoning(
    template: str | None, vocabulary: Collection[str] = ()
) -> ReasoningSyntax | None:
    """:data:`THINK` when the template or the vocabulary knows ``</think>``, else ``None``.

    >>> detect_reasoning("{{ '<think>' + reasoning + '</think>' }}") is THINK
    True
    """
    if (template and THINK.end in template) or THINK.end in vocabulary:
        return THINK
    return None


def opened_by_prompt(prompt_text: str, syntax: ReasoningSyntax | None) -> bool:
    """Whether the rendered prompt ends inside an open think block."""
    if syntax is None:
        return False
    tail = prompt_text.rstrip()
    return tail.endswith(syntax.start)


def reasoning_lark(
    syntax: ReasoningSyntax, *, opened: bool, specials: Mapping[str, int]
) -> tuple[str, list[str]]:
    """``(expression, rules)``: the think block as a Lark prefix (optional unless the
    prompt opened it), followed by optional whitespace. Its text is free.

    With a special end marker the block is any tokens but special ones (so a thinking
    budget may end it between the bytes of one character); else any text up to the
    first end marker (a lazy lexeme).
    """
    lit = Pieces(specials)
    end = lit((syntax.end,))
    if lit.special(syntax.end):
        banned = ",".join(str(i) for i in sorted(set(specials.values())))
        rules = [f"think: <[^{banned}]>* {end}"]
    else:
        rules = [f"think[lazy]: TEXT {end}"]
    rules.append("WS: /[ \\t\\n]{1,4}/")
    block = "think" if opened else f"({lit((syntax.start,))} think)?"
    return f"{block} WS?", rules
