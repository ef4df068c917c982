"""mlx_gen.constraints: constructors and their errors, the bitmask op, token tables, the cache."""

from __future__ import annotations

import json

import llguidance
import llguidance.numpy as lln
import mlx.core as mx
import numpy as np
import pytest
from pydantic import BaseModel, Field

import mlx_gen as mg
from mlx_gen.constraints import apply_token_bitmask, compile_constraint
from mlx_gen.constraints.compiled import GrammarCache, TokenTable, build_token_table
from mlx_gen.constraints.matcher import Matcher


class Person(BaseModel):
    name: str = Field(max_length=10)
    age: int = Field(ge=0, le=120)


def test_constructors_compile_and_compare_by_grammar():
    a = mg.JsonSchema({"type": "object", "properties": {"n": {"type": "integer"}}})
    b = mg.JsonSchema('{"type": "object", "properties": {"n": {"type": "integer"}}}')
    assert a == b and hash(a) == hash(b)  # property order is kept: it orders the output
    assert a != mg.JsonSchema(a.schema, whitespace=None)  # compact JSON is another grammar
    assert mg.JsonSchema(Person).schema == Person.model_json_schema()
    assert json.loads(mg.JsonObject().grammar)  # llguidance grammar text
    assert mg.Choice(["a", "b"]).choices == ("a", "b")
    assert mg.Regex("[0-9]+").pattern == "[0-9]+"
    assert mg.Grammar('start: "x"+').lark == 'start: "x"+'


@pytest.mark.parametrize(
    "schema, named",
    [
        ({"type": "array", "uniqueItems": True}, "uniqueItems"),
        ({"not": {"type": "string"}}, "not"),
        ({"type": "object", "properties": {"a": {"type": "array", "contains": {}}}}, "contains"),
    ],
)
def test_unsupported_schema_keyword_is_named(schema, named):
    with pytest.raises(ValueError, match=rf"unsupported JSON Schema keyword\(s\): {named}\b"):
        mg.JsonSchema(schema)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: mg.JsonSchema("{not json"), "not valid JSON"),
        (lambda: mg.JsonSchema(42), "schema=42 is invalid"),
        (lambda: mg.JsonSchema({"type": "string", "format": "nope"}), "Unknown format: nope"),
        (lambda: mg.Regex("a(b"), "unclosed group"),
        (lambda: mg.Regex(""), "pattern='' is invalid"),
        (lambda: mg.Grammar("start: missing"), 'unknown name: "missing"'),
        (lambda: mg.Choice("yes"), "choices='yes' is invalid"),
        (lambda: mg.Choice([]), r"choices=\[\] is invalid"),
        (lambda: mg.Choice(["a", ""]), r"\[''\] are not non-empty strings"),
        (lambda: mg.GenerationSettings(constraint="[0-9]+"), "constraint='\\[0-9\\]\\+' is"),
    ],
)
def test_bad_constraints_raise_named_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("vocab, words", [(70, 3), (64, 2), (100, 2), (5, 1)])
def test_bitmask_op_equals_llguidance_numpy_reference(vocab, words):
    rng = np.random.default_rng(vocab)
    logits = rng.standard_normal((3, vocab)).astype(np.float32)
    bitmask = rng.integers(-(2**31), 2**31, size=(3, words), dtype=np.int64).astype(np.int32)
    want = logits.copy()
    lln.apply_token_bitmask_inplace(want, bitmask)  # llguidance's numpy kernel
    got = apply_token_bitmask(mx.array(logits), mx.array(bitmask))
    np.testing.assert_array_equal(np.array(got), want)
    assert np.isneginf(np.array(got)[:, 32 * words :]).all()  # ids beyond the mask


def test_token_table_bytes_and_encoding(stories_dir):
    model = mg.load(stories_dir)
    table = TokenTable(model.tokenizer._tokenizer)
    a, space_a = (model.tokenizer.convert_tokens_to_ids(t) for t in ["a", "▁a"])
    assert table.tokens[a] == b"a" and table.tokens[space_a] == b" a"
    assert table.tokens[3 + 0x41] == b"A"  # <0x41>, a byte-fallback piece
    # SentencePiece's encode adds a space ("a" -> "▁a"); the table's does not.
    assert table("a") == [a] and table(" a") == [space_a]


def test_whole_eos_set_and_real_vocab_size(stories_dir):
    model = mg.load(stories_dir)
    compiled = compile_constraint(
        mg.Regex("ab?"), model.tokenizer, vocab_size=600, eos_token_ids=[2, 5, 7]
    )
    matcher = Matcher(compiled)
    first = matcher.mask()
    assert first.shape == (1, (600 + 31) // 32)
    matcher.consume(model.tokenizer.convert_tokens_to_ids("a"))
    bits = np.unpackbits(matcher.mask().view(np.uint8), bitorder="little")[:600]
    allowed = set(np.flatnonzero(bits).tolist())
    assert {2, 5, 7} <= allowed  # every EOS id at the accepting state
    assert not allowed & set(range(512, 600))  # ids beyond the tokenizer are never allowed


def test_cache_compiles_each_grammar_once_per_tokenizer(stories_dir, monkeypatch):
    model = mg.load(stories_dir)
    cache = GrammarCache(max_grammars=2)
    letters, same, digits = mg.Regex("[a-z]+"), mg.Regex("[a-z]+"), mg.Regex("[0-9]+")
    built = []
    real = llguidance.LLMatcher
    monkeypatch.setattr(llguidance, "LLMatcher", lambda *a, **k: built.append(a) or real(*a, **k))
    kwargs = dict(vocab_size=512, eos_token_ids=[2], cache=cache)
    first = compile_constraint(letters, model.tokenizer, **kwargs)
    again = compile_constraint(same, model.tokenizer, **kwargs)
    assert first.matcher is again.matcher and len(built) == 1
    compile_constraint(letters, model.tokenizer, **{**kwargs, "eos_token_ids": [2, 5]})
    assert len(built) == 2  # another EOS set is another grammar
    compile_constraint(digits, model.tokenizer, **kwargs)  # the third: the oldest is dropped
    compile_constraint(letters, model.tokenizer, **{**kwargs, "eos_token_ids": [2, 5]})
    compile_constraint(letters, model.tokenizer, **kwargs)
    assert len(built) == 4
    table = build_token_table(model.tokenizer, vocab_size=512, eos_token_ids=[2])
    assert table.eos_tokens == [2] and table.vocab_size == 512
