"""Tiny random models whose tokenizers hold a tool family's marker tokens, and minimal
chat templates written for these tests (each reproduces its family's documented format)."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, Tokenizer

from tests.checkpoints import llama_config, write_checkpoint

# Hermes / Qwen2.5: tools in the system turn, calls as <tool_call> JSON, tool results as
# <tool_response>. ``tojson`` of arguments: a JSON string would be encoded twice.
HERMES = """{%- if tools %}<|im_start|>system
<tools>
{%- for t in tools %}
{{ t | tojson }}
{%- endfor %}
</tools>
Call a tool with <tool_call>
{"name": <name>, "arguments": <args>}
</tool_call><|im_end|>
{% endif %}
{%- for m in messages %}
{%- if m.role == 'assistant' and m.tool_calls %}<|im_start|>assistant
{% if m.content %}{{ m.content }}{% endif %}
{%- for c in m.tool_calls %}<tool_call>
{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments | tojson }}}
</tool_call>{% endfor %}<|im_end|>
{% elif m.role == 'tool' %}<|im_start|>user
<tool_response>
{{ m.content }}
</tool_response><|im_end|>
{% else %}<|im_start|>{{ m.role }}
{{ m.content }}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""

# Qwen3: as Hermes, but assistant content is split on </think> (so None fails) and
# enable_thinking=false pre-fills an empty think block.
QWEN3 = HERMES.replace(
    "{% if m.content %}{{ m.content }}{% endif %}", "{{ m.content.split('</think>')[-1] }}"
).replace(
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
    "{%- if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n"
    "{% endif %}{% endif %}",
)

# A template that opens the think block itself (DeepSeek-R1 / Qwen3-Thinking style).
THINK_OPEN = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
)


def _generic_body(call: str) -> str:
    """A chatml template whose assistant tool calls render through ``call``."""
    return (
        "{%- if tools %}<|im_start|>system\n{% for t in tools %}{{ t | tojson }}\n{% endfor %}"
        "<|im_end|>\n{% endif %}"
        "{%- for m in messages %}<|im_start|>{{ m.role }}\n"
        "{%- if m.tool_calls %}{% for c in m.tool_calls %}" + call + "{% endfor %}"
        "{%- else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
        "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


QWEN3_CODER = _generic_body(
    "<tool_call>\n<function={{ c.function.name }}>\n"
    "{% for k, v in c.function.arguments.items() %}<parameter={{ k }}>\n{{ v }}\n</parameter>\n"
    "{% endfor %}</function>\n</tool_call>"
)
LLAMA3 = _generic_body(
    '{"name": "{{ c.function.name }}", "parameters": {{ c.function.arguments | tojson }}}'
).replace("<|im_start|>system", '<|start_header_id|>system "parameters"')
MISTRAL = _generic_body(
    '[TOOL_CALLS][{"name": "{{ c.function.name }}", "arguments": '
    "{{ c.function.arguments | tojson }}}]"
)
MISTRAL_ARGS = _generic_body(
    "[TOOL_CALLS]{{ c.function.name }}[ARGS]{{ c.function.arguments | tojson }}"
)
PYTHONIC = _generic_body(
    "[{{ c.function.name }}({% for k, v in c.function.arguments.items() %}{{ k }}="
    "{{ v | tojson }}{% endfor %})]"
).replace("<|im_start|>system", "<|im_start|>system [func_name1(")
LFM2 = _generic_body("<|tool_call_start|>[{{ c.function.name }}()]<|tool_call_end|>")
# DeepSeek V3.1 concatenates ``function.arguments`` as text (``+``): a mapping fails.
DEEPSEEK = _generic_body(
    "{{ '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + c.function.name + '<｜tool▁sep｜>'"
    " + c.function.arguments + '<｜tool▁call▁end｜><｜tool▁calls▁end｜>' }}"
)

FAMILIES = {
    "hermes": (HERMES, ["<tool_call>", "</tool_call>"]),
    "qwen3_coder": (QWEN3_CODER, ["<tool_call>", "</tool_call>"]),
    "llama3_json": (LLAMA3, ["<|python_tag|>"]),
    "llama3_python_tag": (LLAMA3, ["<|python_tag|>"]),
    "mistral": (MISTRAL, ["[TOOL_CALLS]"]),
    "mistral_args": (MISTRAL_ARGS, ["[TOOL_CALLS]", "[ARGS]"]),
    "pythonic": (PYTHONIC, []),
    "lfm2": (LFM2, ["<|tool_call_start|>", "<|tool_call_end|>"]),
    "deepseek_v3_1": (
        DEEPSEEK,
        [
            "<｜tool▁calls▁begin｜>",
            "<｜tool▁call▁begin｜>",
            "<｜tool▁sep｜>",
            "<｜tool▁call▁end｜>",
            "<｜tool▁calls▁end｜>",
        ],
    ),
    "generic": (THINK_OPEN.replace("<think>\n", ""), []),
}


def write_tool_model(
    folder: Path, template: str, specials: list[str], *, plain: list[str] = (), seed: int = 0
) -> Path:
    """A tiny random Llama whose tokenizer adds ``specials`` (special tokens) and ``plain``
    (non-special added tokens), with ``template`` as its chat template."""
    write_checkpoint(folder, llama_config(max_position_embeddings=4096), seed=seed)
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    tok.add_tokens([AddedToken(s, special=False, normalized=False) for s in plain])
    tok.save(str(folder / "tokenizer.json"))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = template
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder
