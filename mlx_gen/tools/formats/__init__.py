"""Tool-call formats, one module per family (data only), and detection from a template.

Detection reads the chat template text (and, where a family needs it, the vocabulary):
the first format whose ``template_markers`` all occur in the template (and whose
``vocab_markers`` are all tokens) wins, in the order of :data:`FORMATS`; a template
that names no family gets :data:`GENERIC`.
"""

from __future__ import annotations

from collections.abc import Collection

from mlx_gen.tools.formats.base import ToolFormat
from mlx_gen.tools.formats.deepseek import DEEPSEEK_V3_1
from mlx_gen.tools.formats.generic import GENERIC
from mlx_gen.tools.formats.hermes import HERMES
from mlx_gen.tools.formats.llama3 import LLAMA3_JSON, LLAMA3_PYTHON_TAG
from mlx_gen.tools.formats.mistral import MISTRAL_ARGS, MISTRAL_LIST
from mlx_gen.tools.formats.pythonic import LFM2, PYTHONIC
from mlx_gen.tools.formats.qwen3_coder import QWEN3_CODER

# Detection order: more specific markers first (Qwen3-Coder's template also says <tool_call>).
FORMATS: dict[str, ToolFormat] = {
    f.name: f
    for f in (
        QWEN3_CODER,
        HERMES,
        MISTRAL_ARGS,
        MISTRAL_LIST,
        DEEPSEEK_V3_1,
        LFM2,
        LLAMA3_JSON,
        LLAMA3_PYTHON_TAG,
        PYTHONIC,
        GENERIC,
    )
}
# Formats only chosen by name (their markers overlap a more common one's).
_BY_NAME_ONLY = {"llama3_python_tag", "generic"}


def format_named(name: str) -> ToolFormat:
    """The format called ``name``.

    Raises:
        ValueError: An unknown name (the valid ones are listed).
    """
    if name not in FORMATS:
        raise ValueError(f"tool_format={name!r} is invalid (valid: {', '.join(FORMATS)})")
    return FORMATS[name]


def detect_format(template: str | None, vocabulary: Collection[str] = ()) -> ToolFormat:
    """The format of a chat template (see the module docstring).

    >>> detect_format("... <tool_call> ...").name
    'hermes'
    >>> detect_format("{{ messages }}").name
    'generic'
    """
    text = template or ""
    for fmt in FORMATS.values():
        if fmt.name in _BY_NAME_ONLY or not fmt.template_markers:
            continue
        if all(m in text for m in fmt.template_markers) and all(
            m in vocabulary for m in fmt.vocab_markers
        ):
            return fmt
    return GENERIC


__all__ = ["FORMATS", "GENERIC", "ToolFormat", "detect_format", "format_named"]
