"""Llama 3.1-3.3 JSON calls: ``{"name": ..., "parameters": {...}}`` as the whole answer,
or after ``<|python_tag|>`` (one call per answer in both forms)."""

from mlx_gen.tools.formats.base import ToolFormat

LLAMA3_JSON = ToolFormat(
    name="llama3_json",
    example='{"name": "get_weather", "parameters": {"city": "Paris"}}',
    call_open=('{"name": "',),
    header=('{name}", "parameters": ',),
    footer=("}",),
    anywhere=False,
    single_call=True,
    template_markers=("<|start_header_id|>", '"parameters"'),
)

LLAMA3_PYTHON_TAG = ToolFormat(
    name="llama3_python_tag",
    example='<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}',
    section_open=("<|python_tag|>",),
    header=('{"name": "{name}", "parameters": ',),
    footer=("}",),
    single_call=True,
    template_markers=("<|python_tag|>", "<|start_header_id|>"),
    vocab_markers=("<|python_tag|>",),
)
