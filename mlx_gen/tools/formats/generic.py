"""Generic: for templates without tool support (SmolLM2, Gemma 3), as llama.cpp's
generic handler does. The tools are described in a system message and the whole answer
is one JSON envelope: ``{"tool_calls": [{"name": ..., "arguments": {...}}]}`` or, under
``auto``, ``{"response": "text"}``."""

from mlx_gen.tools.formats.base import ToolFormat

GENERIC = ToolFormat(
    name="generic",
    example='{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}',
    section_open=('{"tool_calls": [',),
    header=('{"name": "{name}", "arguments": ',),
    footer=("}",),
    separator=(", ",),
    section_close=("]}",),
    anywhere=False,
    native_tools=False,
    response='"{\\"response\\": " %json{"type": "string", "maxLength": 4000} "}"',
)
