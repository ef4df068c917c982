"""Hermes / Qwen2.5 / Qwen3: ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``."""

from mlx_gen.tools.formats.base import ToolFormat

HERMES = ToolFormat(
    name="hermes",
    example='<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
    call_open=("<tool_call>", "\n"),
    header=('{"name": "{name}", "arguments": ',),
    footer=("}",),
    call_close=("\n", "</tool_call>"),
    separator=("\n",),
    template_markers=("<tool_call>",),
)
