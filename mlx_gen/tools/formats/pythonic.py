"""Pythonic calls: ``[get_weather(city="Paris"), ...]`` as the whole answer (Llama 3.2/4),
or between ``<|tool_call_start|>`` and ``<|tool_call_end|>`` (LFM2)."""

from mlx_gen.tools.formats.base import ToolFormat

PYTHONIC = ToolFormat(
    name="pythonic",
    example='[get_weather(city="Paris")]',
    section_open=("[",),
    header=("{name}(",),
    footer=(")",),
    separator=(", ",),
    section_close=("]",),
    args="pythonic",
    anywhere=False,
    template_markers=("[func_name1(",),
)

LFM2 = ToolFormat(
    name="lfm2",
    example='<|tool_call_start|>[get_weather(city="Paris")]<|tool_call_end|>',
    section_open=("<|tool_call_start|>", "["),
    header=("{name}(",),
    footer=(")",),
    separator=(", ",),
    section_close=("]", "<|tool_call_end|>"),
    args="pythonic",
    template_markers=("<|tool_call_start|>",),
)
