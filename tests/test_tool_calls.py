"""Tool calls valid by construction: every family, every tool_choice, on random models.

A random model only produces valid calls if the construction guarantees it: 50 seeded
sampled runs per family at temperature 1 (25 ``required``, 25 named, decoded as one
batch) must all parse and validate against the tool's schema with ``jsonschema``.
"""

from __future__ import annotations

import json
from dataclasses import replace

import jsonschema
import pytest

import mlx_gen as mg
from mlx_gen.constraints import Matcher, compile_constraint
from mlx_gen.tools import FORMATS, prepare_chat
from mlx_gen.tools.types import ToolCallArguments, ToolCallStart
from tests.tool_models import FAMILIES, write_tool_model

S = mg.GenerationSettings
W = {
    "type": "object",
    "properties": {
        "c": {"type": "string", "maxLength": 3},
        "n": {"type": "integer", "minimum": 1, "maximum": 9},
    },
    "required": ["c"],
    "additionalProperties": False,
}
V = {
    "type": "object",
    "properties": {"k": {"enum": ["a", "b"]}},
    "required": ["k"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "w", "description": "weather", "parameters": W}},
    {"type": "function", "function": {"name": "v", "parameters": V}},
]
SCHEMAS = {"w": W, "v": V}
USER = [{"role": "user", "content": "hi"}]
RUNS = 50


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    cache = {}

    def get(family):
        if family not in cache:
            template, specials = FAMILIES[family]
            cache[family] = mg.load(write_tool_model(root / family, template, specials))
        return cache[family]

    return get


def _plan(model, family, choice, **kw):
    settings = S(temperature=1.0, max_tokens=160)
    return prepare_chat(
        model.tokenizer,
        USER,
        settings=settings,
        tools=TOOLS,
        tool_choice=choice,
        parallel_tool_calls=False,
        tool_format=family,
        **kw,
    )


def _parse(plan, text):
    parser = plan.parser()
    parser.feed(text)
    parser.finish()
    return parser.result()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_required_and_named_calls_are_always_valid(models, family):
    model = models(family)
    plans = [_plan(model, family, "required"), _plan(model, family, "v")]
    rows = [plans[i % 2] for i in range(RUNS)]
    results = mg.generate_batch(
        model,
        [p.prompt_ids for p in rows],
        per_prompt_settings=[replace(p.settings, seed=i) for i, p in enumerate(rows)],
    )
    for i, (plan, result) in enumerate(zip(rows, results, strict=True)):
        assert result.finish_reason == "stop", (family, i, result.text)
        parsed = _parse(plan, result.text)
        assert len(parsed.tool_calls) == 1, (family, i, result.text)
        call = parsed.tool_calls[0]
        if i % 2:
            assert call.name == "v"
        jsonschema.validate(call.arguments, SCHEMAS[call.name])


@pytest.mark.parametrize("family", sorted(f for f in FAMILIES if FORMATS[f].anywhere))
def test_none_never_produces_a_marker(models, family):
    """Every family with a start marker (the others' calls are the whole answer: under
    ``none`` they are not parsed)."""
    model = models(family)
    plan = _plan(model, family, "none")
    trigger = plan.format.trigger
    (marker,) = model.tokenizer.encode(trigger, add_special_tokens=False)

    def favour(logits, ctx):  # without the ban, the marker would come in the first steps
        return logits.at[:, marker].add(6.0)

    favoured = replace(plan.settings, max_tokens=40, logits_processors=[favour])
    results = mg.generate_batch(
        model,
        [plan.prompt_ids] * 8,
        per_prompt_settings=[replace(favoured, seed=i) for i in range(8)],
    )
    for result in results:
        assert marker not in result.token_ids and trigger not in result.text
        assert _parse(plan, result.text).tool_calls == ()
    unbanned = replace(favoured, bad_words=(), seed=0)
    assert marker in mg.generate(model, plan.prompt_ids, settings=unbanned).token_ids


@pytest.mark.parametrize("family", ["hermes", "deepseek_v3_1", "mistral_args"])
def test_auto_gives_no_call_when_the_marker_is_banned(models, family):
    model = models(family)
    trigger = FORMATS[family].trigger
    (marker,) = model.tokenizer.encode(trigger, add_special_tokens=False)

    def favour(logits, ctx):  # without the ban, the marker would come in the first steps
        return logits.at[:, marker].add(6.0)

    def run(seed, bias):
        settings = S(temperature=1.0, seed=seed, max_tokens=60, logits_processors=[favour])
        return mg.generate(
            model, messages=USER, tools=TOOLS, tool_choice="auto", tool_format=family,
            settings=replace(settings, logit_bias=bias),
        )  # fmt: skip

    for seed in range(6):
        result = run(seed, {marker: -1e9})
        assert result.tool_calls == () and trigger not in result.text
        assert marker not in result.token_ids
    assert run(0, {}).tool_calls  # unbanned, the marker arms the grammar: a call


def test_auto_arms_the_grammar_at_the_marker(models):
    """Forcing the marker with a +inf bias at step 3 arms the grammar: a valid call follows."""
    model = models("hermes")
    marker = model.tokenizer.encode("<tool_call>", add_special_tokens=False)[0]

    def force_at_3(logits, ctx):
        return logits.at[:, marker].add(1e9) if ctx.step == 3 else logits

    result = mg.generate(
        model,
        messages=USER,
        tools=TOOLS,
        tool_choice="auto",
        parallel_tool_calls=False,
        settings=S(temperature=1.0, seed=2, max_tokens=160, logits_processors=[force_at_3]),
    )
    assert result.finish_reason == "stop", result.text
    assert len(result.tool_calls) == 1
    assert len(model.tokenizer.encode(result.content, add_special_tokens=False)) <= 3
    call = result.tool_calls[0]
    jsonschema.validate(call.arguments, SCHEMAS[call.name])


def test_streamed_fragments_concatenate_to_the_arguments(models):
    model = models("hermes")
    chunks = list(
        mg.stream_generate(
            model,
            messages=USER,
            tools=TOOLS,
            tool_choice="w",
            settings=S(temperature=1.0, seed=5, max_tokens=160),
        )
    )
    pieces = [p for c in chunks for p in c.pieces]
    starts = [p for p in pieces if isinstance(p, ToolCallStart)]
    fragments = [p.fragment for p in pieces if isinstance(p, ToolCallArguments)]
    call = chunks[-1].parsed.tool_calls[0]
    assert [(s.index, s.id, s.name) for s in starts] == [(0, call.id, "w")]
    assert pieces.index(starts[0]) < min(
        pieces.index(p) for p in pieces if isinstance(p, ToolCallArguments)
    )
    assert len(fragments) > 2 and "".join(fragments) == call.arguments_json
    for n in range(len(fragments)):
        assert call.arguments_json.startswith("".join(fragments[:n]))


def test_parallel_calls_and_the_single_call_switch(models):
    model = models("hermes")
    many = 0
    for seed in range(6):
        result = mg.generate(
            model,
            messages=USER,
            tools=TOOLS,
            tool_choice="required",
            parallel_tool_calls=False,
            settings=S(temperature=1.0, seed=seed, max_tokens=200),
        )
        assert len(result.tool_calls) == 1, result.text
        parallel = mg.generate(
            model,
            messages=USER,
            tools=TOOLS,
            tool_choice="required",
            settings=S(temperature=1.0, seed=seed, max_tokens=200),
        )
        many = max(many, len(parallel.tool_calls))
    assert many >= 2  # the parallel grammar lets a random model chain calls


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
    plan = _plan(model, "mistral", "v")
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
        (call,) = _parse(plan, text).tool_calls
        assert (call.name, call.arguments) == ("v", {"k": "a"})
