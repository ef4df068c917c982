"""Qwen3-Coder: XML calls with typed parameters (strings raw, other values as JSON)::

<tool_call>
<function=get_weather>
<parameter=city>
Paris
</parameter>
</function>
</tool_call>
"""

from mlx_gen.tools.formats.base import ToolFormat

QWEN3_CODER = ToolFormat(
    name="qwen3_coder",
    example=(
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
        "</function>\n</tool_call>"
    ),
    call_open=("<tool_call>", "\n"),
    header=("<function={name}>\n",),
    footer=("</function>",),
    call_close=("\n", "</tool_call>"),
    separator=("\n",),
    args="xml",
    template_markers=("<function=", "<parameter="),
)
