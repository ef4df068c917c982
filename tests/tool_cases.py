"""Shared cases of the tool-call tests: two tools with schemas, and a model per family.

The tools are small on purpose: a random model can only produce calls that validate
against ``W`` and ``V`` if the grammar guarantees them.
"""

from __future__ import annotations

import pytest

import mlx_gen as mg
from mlx_gen.tools import prepare_chat
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
    """``models(family)``: a tiny random model with that family's template and markers."""
    root = tmp_path_factory.mktemp("families")
    cache = {}

    def get(family):
        if family not in cache:
            template, specials = FAMILIES[family]
            cache[family] = mg.load(write_tool_model(root / family, template, specials))
        return cache[family]

    return get


def plan_for(model, family, choice, **kw):
    """The chat plan of ``USER`` with ``TOOLS`` under ``choice`` (temperature 1, 160 tokens)."""
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


def parse(plan, text):
    """What ``plan``'s parser reads from the whole ``text``."""
    parser = plan.parser()
    parser.feed(text)
    parser.finish()
    return parser.result()
