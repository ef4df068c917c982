"""Mistral: ``[TOOL_CALLS][{"name": ..., "arguments": {...}}]`` (v3 list form; SentencePiece
tokenizers such as Mistral 7B v0.3's put a space before ``[``, Tekken ones do not, so
the space is optional) and
``[TOOL_CALLS]name[ARGS]{...}`` (the form of Mistral Small 3.2, Magistral, Devstral)."""

from mlx_gen.tools.formats.base import ToolFormat

MISTRAL_LIST = ToolFormat(
    name="mistral",
    example='[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}]',
    section_open=("[TOOL_CALLS]", " ["),
    header=('{"name": "{name}", "arguments": ',),
    footer=("}",),
    separator=(", ",),
    section_close=("]",),
    template_markers=("[TOOL_CALLS]",),
)

MISTRAL_ARGS = ToolFormat(
    name="mistral_args",
    example='[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}',
    call_open=("[TOOL_CALLS]",),
    header=("{name}", "[ARGS]"),
    template_markers=("[TOOL_CALLS]", "[ARGS]"),
)
