"""Tool calls: what the construction refuses, what each token reports, and format details.

Bad tools and choices are named; formats that write arguments parameter by parameter
refuse keywords they cannot enforce; speculative runs keep the grammar; markers that
are plain added tokens, the declared property order and Mistral's spacing.
"""

from __future__ import annotations

import json
from dataclasses import replace

import jsonschema
import pytest

import mlx_gen as mg
from mlx_gen.constraints import Matcher, compile_constraint
from mlx_gen.tools import prepare_chat
from tests.tool_cases import SCHEMAS, TOOLS, USER, S, W, models, parse, plan_for
from tests.tool_models import FAMILIES, write_tool_model

__all__ = ["models"]  # the fixture, imported for pytest


def test_bad_tools_and_choices_are_named(models):
    model = models("hermes")
    bad = [
        (
            [{"type": "function", "function": {"name": "x", "parameters": {"type": "array"}}}],
            "auto",
            "tools[0].function.parameters",
        ),
        (
            [
                {
                    "type": "function",
                    "function": {
                        "name": "x",
                        "parameters": {
                            "type": "object",
                            "properties": {"a": {"type": "array", "uniqueItems": True}},
                        },
                    },
                }
            ],
            "auto",
            "uniqueItems",
        ),
        (
            [{"type": "function", "function": {"name": "bad name"}}],
            "auto",
            "tools[0].function.name",
        ),
        (TOOLS, "nope", "'nope', which is not a declared tool"),
        (TOOLS, {"type": "function", "function": {"name": "zz"}}, "'zz'"),
        (TOOLS, 3, "tool_choice=3"),
    ]
    for tools, choice, needle in bad:
        with pytest.raises(ValueError, match=None) as err:
            mg.generate(model, messages=USER, tools=tools, tool_choice=choice)
        assert needle in str(err.value), (needle, str(err.value))
    with pytest.raises(ValueError, match="tool_format='nope' is invalid"):
        mg.generate(model, messages=USER, tools=TOOLS, tool_format="nope")
    with pytest.raises(ValueError, match="cannot be combined"):
        mg.generate(model, messages=USER, tools=TOOLS, settings=S(constraint=mg.JsonObject()))


@pytest.mark.parametrize("family", ["pythonic", "qwen3_coder"])
def test_parameter_by_parameter_formats_refuse_what_they_cannot_enforce(models, family):
    """Pythonic and XML arguments are written parameter by parameter: an object-level
    keyword (anyOf, ...) or a required name that is not a property is refused by name."""
    model = models(family)
    props = {"a": {"type": "integer"}, "b": {"type": "integer"}}
    bad = [
        ({"type": "object", "properties": props, "anyOf": [{"required": ["a"]}]}, "anyOf"),
        ({"type": "object", "properties": props, "required": ["a", "zz"]}, "'zz'"),
    ]
    for parameters, needle in bad:
        tool = {"type": "function", "function": {"name": "f", "parameters": parameters}}
        with pytest.raises(ValueError, match="tools\\[0\\].function.parameters") as err:
            mg.generate(model, messages=USER, tools=[tool], tool_format=family)
        assert needle in str(err.value) and family in str(err.value), str(err.value)


def test_each_token_says_what_the_grammar_did(models):
    model = models("hermes")
    result = mg.generate(
        model,
        messages=USER,
        tools=TOOLS,
        tool_choice="w",
        settings=S(
            temperature=1.0, seed=4, max_tokens=160, logprobs=0, logprobs_modes=("raw", "processed")
        ),
    )
    text = [model.tokenizer.decode([i]) for i in result.token_ids]
    # <tool_call> then the fixed header are forced; the string's characters are masked.
    assert result.grammar[0] == "forced" and text[0] == "<tool_call>"
    header = '\n{"name": "w", "arguments": {"c": "'
    assert "".join(text[1 : 1 + len(header)]) == header
    assert set(result.grammar[1 : 1 + len(header)]) == {"forced"}
    assert "masked" in result.grammar
    # logprobs work for tool-call tokens: a forced token has processed logprob 0.
    assert result.logprobs[0]["processed"].logprob == 0.0
    assert result.logprobs[0]["raw"].logprob < 0.0
    plain = mg.generate(model, messages=USER, settings=S(max_tokens=3))
    assert plain.grammar == [None, None, None]


def test_speculative_runs_enforce_the_tool_grammar(models):
    model = models("hermes")
    settings = S(temperature=0.0, max_tokens=200)
    plain = mg.generate(model, messages=USER, tools=TOOLS, tool_choice="w", settings=settings)
    fast = mg.generate(
        model,
        messages=USER,
        tools=TOOLS,
        tool_choice="w",
        settings=(fast_settings := replace(settings, speculative=mg.PromptLookup())),
    )
    assert fast.token_ids == plain.token_ids
    assert fast.stats.speculation.accepted > 0  # accepted drafts took part
    assert fast.grammar == plain.grammar and "forced" in fast.grammar  # reported alike
    plan = prepare_chat(model.tokenizer, USER, settings=fast_settings, tools=TOOLS, tool_choice="w")
    (lone,) = mg.generate_batch(model, [plan.prompt_ids], settings=plan.settings)
    assert lone.stats.speculation.accepted > 0  # a lone batch row speculates too
    assert lone.token_ids == plain.token_ids and lone.grammar == plain.grammar
    assert len(fast.tool_calls) >= 2  # greedy, this model chains calls: drafts can repeat them
    for call in fast.tool_calls:
        jsonschema.validate(call.arguments, W)


def test_markers_that_are_plain_added_tokens(tmp_path):
    """Qwen2.5's <tool_call> is an added token that is not special: the grammar matches
    its text (lazily under auto)."""
    template, _ = FAMILIES["hermes"]
    model = mg.load(
        write_tool_model(tmp_path / "m", template, [], plain=["<tool_call>", "</tool_call>"])
    )
    marker = model.tokenizer.encode("<tool_call>", add_special_tokens=False)
    assert len(marker) == 1

    def force_at_2(logits, ctx):
        return logits.at[:, marker[0]].add(1e9) if ctx.step == 2 else logits

    for choice, processors in (("required", []), ("auto", [force_at_2])):
        result = mg.generate(
            model,
            messages=USER,
            tools=TOOLS,
            tool_choice=choice,
            parallel_tool_calls=False,
            settings=S(temperature=1.0, seed=1, max_tokens=160, logits_processors=processors),
        )
        assert result.finish_reason == "stop" and len(result.tool_calls) == 1, result.text
        call = result.tool_calls[0]
        jsonschema.validate(call.arguments, SCHEMAS[call.name])


def test_arguments_follow_the_declared_property_order(models):
    model = models("hermes")
    props = {"z": {"enum": [1, 2]}, "a": {"enum": [3, 4]}, "m": {"enum": [5, 6]}}
    schema = {"type": "object", "properties": props, "required": ["z", "a", "m"],
              "additionalProperties": False}  # fmt: skip
    tool = {"type": "function", "function": {"name": "o", "parameters": schema}}
    for seed in range(3):
        result = mg.generate(
            model, messages=USER, tools=[tool], tool_choice="o", parallel_tool_calls=False,
            settings=S(temperature=1.0, seed=seed, max_tokens=120),
        )  # fmt: skip
        assert list(json.loads(result.tool_calls[0].arguments_json)) == ["z", "a", "m"]


def test_mistral_list_takes_the_space_of_sentencepiece_tokenizers(models):
    """Mistral v3 (SentencePiece) writes ``[TOOL_CALLS] [...]``, Tekken ``[TOOL_CALLS][...]``:
    the grammar allows both, and the parser reads both."""
    model = models("mistral")
    plan = plan_for(model, "mistral", "v")
    compiled = compile_constraint(
        plan.settings.constraint,
        model.tokenizer,
        vocab_size=model.vocab_size,
        eos_token_ids=model.generation_config.eos_token_ids,
    )
    for gap in ("", " "):
        text = f'[TOOL_CALLS]{gap}[{{"name": "v", "arguments": {{"k": "a"}}}}]'
        ids = model.tokenizer.encode(text, add_special_tokens=False)
        assert Matcher(compiled).valid_prefix(ids) == len(ids), gap
        (call,) = parse(plan, text).tool_calls
        assert (call.name, call.arguments) == ("v", {"k": "a"})
