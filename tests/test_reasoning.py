"""Reasoning models: think blocks split exactly, the thinking budget in every decode path,
and tool grammars that only arm after the think block."""

from __future__ import annotations

import json
from dataclasses import replace

import jsonschema
import pytest

import mlx_gen as mg
from mlx_gen.tools import prepare_chat
from tests.tool_models import QWEN3, THINK_OPEN, write_tool_model

S = mg.GenerationSettings
USER = [{"role": "user", "content": "hi"}]
MARKERS = ["<think>", "</think>", "<tool_call>", "</tool_call>"]
TOOL = {
    "type": "function",
    "function": {
        "name": "w",
        "parameters": {
            "type": "object",
            "properties": {"c": {"type": "string", "maxLength": 3}},
            "required": ["c"],
            "additionalProperties": False,
        },
    },
}


@pytest.fixture(scope="module")
def opened(tmp_path_factory):
    """A model whose template opens the think block itself."""
    return mg.load(write_tool_model(tmp_path_factory.mktemp("open") / "m", THINK_OPEN, MARKERS))


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory):
    """A Qwen3-style model: the model opens <think> itself; enable_thinking=false closes it."""
    return mg.load(write_tool_model(tmp_path_factory.mktemp("q3") / "m", QWEN3, MARKERS))


def _ids(model, text):
    ids = model.tokenizer.encode(text, add_special_tokens=False)
    assert len(ids) == 1
    return ids[0]


def _budget(model, n, **kw):
    end = _ids(model, "</think>")
    # The model may not end the block early: the budget's forced end beats this ban.
    return S(
        temperature=1.0,
        seed=3,
        max_tokens=n + 12,
        max_thinking_tokens=n,
        logit_bias={end: -1e9},
        **kw,
    )


@pytest.mark.parametrize("n", [0, 1, 7])
def test_budget_gives_exactly_n_reasoning_tokens_then_the_end_marker(opened, n):
    end = _ids(opened, "</think>")
    result = mg.generate(opened, messages=USER, settings=_budget(opened, n))
    assert end not in result.token_ids[:n] and result.token_ids[n] == end
    # The text's reasoning part is what the first n tokens rendered (streamed bytes).
    reasoning, _, rest = result.text.partition("</think>")
    assert result.reasoning == reasoning and result.content == rest.lstrip()
    assert len(opened.tokenizer.encode(reasoning, add_special_tokens=False)) >= n > 0 or n == 0


def test_budget_with_a_message(opened):
    end = _ids(opened, "</think>")
    result = mg.generate(
        opened, messages=USER, settings=_budget(opened, 4, thinking_end_message=" Done.")
    )
    message = opened.tokenizer.encode(" Done.", add_special_tokens=False)
    assert result.token_ids[4 : 4 + len(message) + 1] == [*message, end]
    assert result.reasoning.endswith(" Done.")


def test_budget_is_equal_in_single_batched_and_speculative_runs(opened):
    # Greedy: speculative sampling draws its randomness differently from plain decoding.
    plan = prepare_chat(
        opened.tokenizer, USER, settings=replace(_budget(opened, 5), temperature=0.0)
    )
    single = mg.generate(opened, plan.prompt_ids, settings=plan.settings).token_ids
    batched = mg.generate_batch(
        opened, [plan.prompt_ids, plan.prompt_ids[:-1]], settings=plan.settings
    )[0].token_ids
    speculative = mg.generate(
        opened,
        plan.prompt_ids,
        settings=replace(plan.settings, speculative=mg.PromptLookup()),
    ).token_ids
    assert single == batched, "batched"
    assert single == speculative, "speculative"
    assert single[5] == _ids(opened, "</think>")


def test_budget_needs_think_tokens(tmp_path):
    from tests.checkpoints import llama_config, write_checkpoint

    write_checkpoint(tmp_path / "plain", llama_config())
    model = mg.load(tmp_path / "plain")
    with pytest.raises(ValueError, match="max_thinking_tokens=3 needs a reasoning model"):
        mg.generate(model, "hi", settings=S(max_thinking_tokens=3))


def test_tool_grammar_arms_after_the_think_block(qwen3):
    start = _ids(qwen3, "<think>")

    def open_think(logits, ctx):
        return logits.at[:, start].add(1e9) if ctx.step == 0 else logits

    result = mg.generate(
        qwen3,
        messages=USER,
        tools=[TOOL],
        tool_choice="required",
        settings=S(
            temperature=1.0,
            seed=1,
            max_tokens=120,
            max_thinking_tokens=6,
            logits_processors=[open_think],
        ),
    )
    assert result.token_ids[0] == start and result.token_ids[7] == _ids(qwen3, "</think>")
    assert result.reasoning == result.text.partition("</think>")[0].removeprefix("<think>")
    assert len(result.tool_calls) == 1 and result.finish_reason == "stop"
    jsonschema.validate(result.tool_calls[0].arguments, TOOL["function"]["parameters"])


def test_enable_thinking_reaches_the_template(qwen3):
    on = prepare_chat(qwen3.tokenizer, USER, settings=S())
    off = prepare_chat(
        qwen3.tokenizer, USER, settings=S(), chat_template_kwargs={"enable_thinking": False}
    )
    assert "<think>" not in on.prompt_text
    assert off.prompt_text.endswith("<think>\n\n</think>\n\n")
    assert not off.reasoning_open
    with pytest.raises(ValueError, match="chat_template_kwargs: 'tools'"):
        prepare_chat(qwen3.tokenizer, USER, settings=S(), chat_template_kwargs={"tools": []})


def test_json_schema_applies_after_reasoning(opened):
    schema = {
        "type": "object",
        "properties": {"a": {"enum": [1, 2]}},
        "required": ["a"],
        "additionalProperties": False,
    }
    settings = replace(_budget(opened, 3), constraint=mg.JsonSchema(schema), max_tokens=60)
    result = mg.generate(opened, messages=USER, settings=settings)
    assert result.finish_reason == "stop", result.text
    assert result.token_ids[3] == _ids(opened, "</think>")
    jsonschema.validate(json.loads(result.content), schema)


def test_budget_may_end_the_block_inside_a_character_under_a_tool_grammar(qwen3):
    """Random byte-level tokens often stop mid-character; the think block is any
    non-special tokens, so the forced </think> is always allowed (it was refused:
    finish_reason 'constraint')."""
    start, end = _ids(qwen3, "<think>"), _ids(qwen3, "</think>")

    def open_think(logits, ctx):
        return logits.at[:, start].add(1e9) if ctx.step == 0 else logits

    for seed in range(6):
        result = mg.generate(
            qwen3,
            messages=USER,
            tools=[TOOL],
            tool_choice="auto",
            settings=S(
                temperature=1.0,
                seed=seed,
                max_tokens=12,
                max_thinking_tokens=4,
                logits_processors=[open_think],
            ),
        )
        assert result.finish_reason != "constraint", (seed, result.finish_message)
        assert result.token_ids[5] == end
