"""Tool calls valid by construction: every family, every tool_choice, on random models.

A random model only produces valid calls if the construction guarantees it: 50 seeded
sampled runs per family at temperature 1 (25 ``required``, 25 named, decoded as one
batch) must all parse and validate against the tool's schema with ``jsonschema``.
Refusals, inspectability and format details: ``test_tool_grammar_rules.py``.
"""

from __future__ import annotations

from dataclasses import replace

import jsonschema
import pytest

import mlx_gen as mg
from mlx_gen.tools import FORMATS
from mlx_gen.tools.types import ToolCallArguments, ToolCallStart
from tests.tool_cases import RUNS, SCHEMAS, TOOLS, USER, S, models, parse, plan_for
from tests.tool_models import FAMILIES

__all__ = ["models"]  # the fixture, imported for pytest


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_required_and_named_calls_are_always_valid(models, family):
    model = models(family)
    plans = [plan_for(model, family, "required"), plan_for(model, family, "v")]
    rows = [plans[i % 2] for i in range(RUNS)]
    results = mg.generate_batch(
        model,
        [p.prompt_ids for p in rows],
        per_prompt_settings=[replace(p.settings, seed=i) for i, p in enumerate(rows)],
    )
    for i, (plan, result) in enumerate(zip(rows, results, strict=True)):
        assert result.finish_reason == "stop", (family, i, result.text)
        parsed = parse(plan, result.text)
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
    plan = plan_for(model, family, "none")
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
        assert parse(plan, result.text).tool_calls == ()
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
