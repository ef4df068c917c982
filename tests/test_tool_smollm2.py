"""The embedded SmolLM2 (its template has no tool support: the generic format)."""

from __future__ import annotations

import mlx_gen as mg

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


def test_weather_question_gives_a_valid_call(default_model_file):
    model = mg.load(default_model_file)
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
