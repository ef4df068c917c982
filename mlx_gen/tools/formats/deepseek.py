"""DeepSeek V3.1: a call section of special-token markers::

<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>name<｜tool▁sep｜>{...}<｜tool▁call▁end｜>
<｜tool▁calls▁end｜>

Its template concatenates a history call's ``function.arguments`` as a string.
"""

from mlx_gen.tools.formats.base import ToolFormat

DEEPSEEK_V3_1 = ToolFormat(
    name="deepseek_v3_1",
    example=(
        '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{"city": "Paris"}'
        "<｜tool▁call▁end｜><｜tool▁calls▁end｜>"
    ),
    section_open=("<｜tool▁calls▁begin｜>",),
    call_open=("<｜tool▁call▁begin｜>",),
    header=("{name}", "<｜tool▁sep｜>"),
    call_close=("<｜tool▁call▁end｜>",),
    section_close=("<｜tool▁calls▁end｜>",),
    arguments_text=True,
    template_markers=("<｜tool▁calls▁begin｜>", "<｜tool▁sep｜>"),
)
