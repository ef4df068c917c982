"""Tool history through real-template pitfalls, an agent loop, the generic format, and
the parser on each family's syntax (streamed piece by piece equals whole)."""

from __future__ import annotations

import json

import pytest

import mlx_gen as mg
from mlx_gen.tools import FORMATS, OutputParser, check_tools, detect_format, prepare_chat
from mlx_gen.tools.reasoning import THINK
from mlx_gen.tools.types import ContentDelta, ReasoningDelta, ToolCallArguments
from tests.tool_models import FAMILIES, HERMES, QWEN3, QWEN3_CODER, write_tool_model

S = mg.GenerationSettings
W = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 8}, "days": {"type": "integer"}},
    "required": ["city"],
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": W}},
    {"type": "function", "function": {"name": "f"}},
]
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}
HISTORY = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
]
# Hermes-3 ships a "tool_use" template that fails when no tools are sent.
HERMES3 = [
    {"name": "default", "template": HERMES.replace("{%- if tools %}", "{%- if false %}")},
    {"name": "tool_use", "template": "{{ raise_exception('no tools') if not tools }}" + HERMES},
]


def _model(tmp_path, template, specials=("<tool_call>", "</tool_call>")):
    return mg.load(write_tool_model(tmp_path / "m", template, list(specials)))


def test_arguments_strings_are_parsed_before_rendering(tmp_path):
    model = _model(tmp_path, HERMES)
    plan = prepare_chat(model.tokenizer, HISTORY, settings=S(), tools=TOOLS)
    assert '"arguments": {"city": "Paris"}}' in plan.prompt_text  # not encoded twice
    assert "<tool_response>\nsunny\n</tool_response>" in plan.prompt_text


def test_qwen3_null_content_and_qwen3_coder_mapping(tmp_path):
    for i, template in enumerate([QWEN3, QWEN3_CODER]):
        model = mg.load(write_tool_model(tmp_path / str(i), template, ["<tool_call>"]))
        plan = prepare_chat(model.tokenizer, HISTORY, settings=S(), tools=TOOLS)
        assert "Paris" in plan.prompt_text
    assert "<parameter=city>\nParis\n</parameter>" in plan.prompt_text


def test_deepseek_v3_1_receives_arguments_as_text(tmp_path):
    """DeepSeek V3.1's template concatenates ``arguments`` as a string: it gets the text."""
    template, specials = FAMILIES["deepseek_v3_1"]
    model = _model(tmp_path, template, specials)
    history = [*HISTORY[:1], {**HISTORY[1], "tool_calls": [{**CALL, "function": {
        "name": "get_weather", "arguments": {"city": "Paris"}}}]}, *HISTORY[2:]]  # fmt: skip
    for messages in (HISTORY, history):
        plan = prepare_chat(model.tokenizer, messages, settings=S(), tools=TOOLS)
        assert plan.format.name == "deepseek_v3_1"
        assert 'get_weather<｜tool▁sep｜>{"city": "Paris"}<｜tool▁call▁end｜>' in plan.prompt_text


def test_hermes3_without_tools_uses_the_default_template(tmp_path):
    model = _model(tmp_path, HERMES3)
    plain = prepare_chat(model.tokenizer, [{"role": "user", "content": "hi"}], settings=S())
    assert "<tools>" not in plain.prompt_text
    with_tools = prepare_chat(model.tokenizer, HISTORY, settings=S(), tools=TOOLS)
    assert "<tools>" in with_tools.prompt_text and with_tools.format.name == "hermes"


@pytest.mark.parametrize(
    "messages, needle",
    [
        ([{"role": "tool", "content": "x"}], "messages[0] is a 'tool' message without"),
        ([{"role": "assistant", "content": None, "tool_calls": "x"}], "messages[0].tool_calls"),
        (
            [{"role": "assistant", "tool_calls": [{"function": {"arguments": "{}"}}]}],
            "messages[0].tool_calls[0].function.name",
        ),
        (
            [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{"}}]}],
            "messages[0].tool_calls[0].function.arguments",
        ),
    ],
)
def test_malformed_history_is_named(tmp_path, messages, needle):
    model = _model(tmp_path, HERMES)
    with pytest.raises(ValueError) as err:
        prepare_chat(model.tokenizer, messages, settings=S(), tools=TOOLS)
    assert needle in str(err.value)


def test_agent_loop_call_result_answer(tmp_path):
    model = _model(tmp_path, HERMES)
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    first = mg.generate(
        model,
        messages=messages,
        tools=TOOLS,
        tool_choice="get_weather",
        settings=S(temperature=1.0, seed=0, max_tokens=120),
    )
    call = first.tool_calls[0]
    messages += [
        {"role": "assistant", "content": first.content or None, "tool_calls": [call.to_openai()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"},
    ]
    second = mg.generate(
        model,
        messages=messages,
        tools=TOOLS,
        tool_choice="none",
        settings=S(temperature=1.0, seed=1, max_tokens=20),
    )
    assert second.tool_calls == () and second.content
    plan = prepare_chat(model.tokenizer, messages, settings=S(), tools=TOOLS)
    assert call.arguments_json in plan.prompt_text and "sunny, 21C" in plan.prompt_text


def test_generic_format_describes_tools_in_a_system_message(tmp_path):
    template, specials = FAMILIES["generic"]
    model = _model(tmp_path, template, specials)
    plan = prepare_chat(model.tokenizer, HISTORY, settings=S(), tools=TOOLS)
    assert plan.format.name == "generic"
    assert plan.prompt_text.startswith("<|im_start|>system\nYou can call these tools:")
    assert '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}' in (
        plan.prompt_text
    )
    assert '{"tool_response": {"tool_call_id": "call_1", "content": "sunny"}}' in plan.prompt_text
    result = mg.generate(
        model,
        messages=HISTORY,
        tools=TOOLS,
        tool_choice="auto",
        settings=S(temperature=1.0, seed=0, max_tokens=200),
    )
    assert result.tool_calls or result.text.startswith('{"response": ')


def test_detection():
    for name in (
        "hermes",
        "qwen3_coder",
        "mistral",
        "mistral_args",
        "deepseek_v3_1",
        "lfm2",
        "llama3_json",
        "pythonic",
    ):
        assert detect_format(FAMILIES[name][0]).name == name
    assert detect_format(QWEN3).name == "hermes"
    assert detect_format(FAMILIES["generic"][0]).name == "generic"


SAMPLES = {
    "hermes": 'Hi <tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa}ris", "days": 2}}'
    '\n</tool_call>\n<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>',
    "qwen3_coder": "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
    "<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>",
    "llama3_json": '{"name": "get_weather", "parameters": {"city": "Paris"}}',
    "mistral": '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}, '
    '{"name": "f", "arguments": {}}]',
    "mistral_args": '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]f[ARGS]{}',
    "pythonic": '[get_weather(city="Paris", days=2), f()]',
    "lfm2": 'ok <|tool_call_start|>[get_weather(city="Paris", days=2)]<|tool_call_end|>',
    "deepseek_v3_1": "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>"
    '{"city": "Paris"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>',
    "generic": '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}',
}


def _parse(fmt, text, step, **kw):
    parser = OutputParser(FORMATS[fmt], check_tools(TOOLS), **kw)
    pieces = []
    for i in range(0, len(text), step):
        pieces += parser.feed(text[i : i + step])
    return parser.result(), pieces + parser.finish()


@pytest.mark.parametrize("fmt", sorted(SAMPLES))
def test_parser_streams_what_it_parses_whole(fmt):
    whole, _ = _parse(fmt, SAMPLES[fmt], 10**6)
    streamed, pieces = _parse(fmt, SAMPLES[fmt], 1)
    assert [(c.name, c.arguments) for c in whole.tool_calls] == [
        (c.name, c.arguments) for c in streamed.tool_calls
    ]
    assert whole.tool_calls[0].name == "get_weather"
    assert whole.tool_calls[0].arguments["city"] in ("Paris", "Pa}ris")
    for i, call in enumerate(streamed.tool_calls):
        fragments = "".join(
            p.fragment for p in pieces if isinstance(p, ToolCallArguments) and p.index == i
        )
        assert fragments == call.arguments_json and json.loads(fragments) == call.arguments
    assert whole.content == {"hermes": "Hi", "lfm2": "ok"}.get(fmt, "")


def test_markers_inside_reasoning_are_never_calls():
    text = (
        '<think>I could write <tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>'
        "</think>\n\nSure."
    )
    parsed, pieces = _parse("hermes", text, 3, reasoning=THINK)
    assert parsed.tool_calls == () and parsed.content == "Sure."
    assert parsed.reasoning == text[len("<think>") : text.index("</think>")]
    assert "".join(p.text for p in pieces if isinstance(p, ReasoningDelta)) == parsed.reasoning
    assert "".join(p.text for p in pieces if isinstance(p, ContentDelta)).strip() == "Sure."


def test_history_without_tools_renders_natively(tmp_path):
    model = _model(tmp_path, HERMES)
    plan = prepare_chat(model.tokenizer, HISTORY, settings=S())
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}' in (
        plan.prompt_text
    )
    assert "tool_response" in plan.prompt_text and plan.format is None


def test_generic_response_streams_its_string():
    text = '{"response": "Hi \\"you\\" \\u00e9\\ud83d\\ude00\\n!"}'
    parsed, pieces = _parse("generic", text, 1)
    assert parsed.content == 'Hi "you" é😀\n!' and parsed.tool_calls == ()
    assert len(pieces) > 5 and "".join(p.text for p in pieces) == parsed.content
    assert _parse("generic", "plain words", 3)[0].content == "plain words"
