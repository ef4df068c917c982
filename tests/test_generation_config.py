"""GenerationConfig resolution: EOS union, precedence, validation naming file/key/value."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlx_gen.loading.generation_config import (
    GenerationConfig,
    apply_overrides,
    resolve_generation_config,
)


def resolve(config=None, gen=None, tok_eos=None, vocab=1000, overrides=None):
    return resolve_generation_config(
        config=config or {},
        generation_config=gen,
        tokenizer_eos_token_id=tok_eos,
        vocab_size=vocab,
        overrides=overrides,
    )


def test_llama31_eos_list_is_kept_whole_and_merged():
    # mlx-examples#1139 honoured only the last; mlx-lm lets generation_config replace config.
    cfg = resolve(
        {"eos_token_id": [128001, 128008, 128009]},
        {"eos_token_id": 128001},
        tok_eos=128009,
        vocab=128256,
    )
    assert cfg.eos_token_ids == (128001, 128008, 128009)


def test_union_keeps_order_config_then_generation_config_then_tokenizer():
    cfg = resolve({"eos_token_id": 7}, {"eos_token_id": [9, 7, 8]}, tok_eos=5)
    assert cfg.eos_token_ids == (7, 9, 8, 5)
    assert cfg.eos_sources == {
        7: ("config.json", "generation_config.json"),
        9: ("generation_config.json",),
        8: ("generation_config.json",),
        5: ("tokenizer",),
    }


def test_eos_id_zero_is_valid():
    # mlx-lm 0.32.2 drops an EOS of 0 through a truthiness test.
    assert resolve({"eos_token_id": 0}, {"eos_token_id": [0]}).eos_token_ids == (0,)
    assert resolve({}, {"eos_token_id": 0}, tok_eos=None).eos_token_ids == (0,)


def test_sampling_defaults_and_suppression_read_from_generation_config():
    gen = {
        "do_sample": True,
        "temperature": 0.6,
        "top_p": 0.9,
        "top_k": 50,
        "min_p": 0.05,
        "repetition_penalty": 1.1,
        "max_new_tokens": 77,
        "suppress_tokens": [4, 5],
        "begin_suppress_tokens": [6],
        "bad_words_ids": [[8, 9]],
        "no_repeat_ngram_size": 3,
        "min_new_tokens": 2,
        "pad_token_id": 0,
        "unknown_key": "ignored",
    }
    cfg = resolve({}, gen)
    assert (cfg.do_sample, cfg.temperature, cfg.top_p, cfg.top_k, cfg.min_p) == (
        True,
        0.6,
        0.9,
        50,
        0.05,
    )
    assert (cfg.repetition_penalty, cfg.max_new_tokens, cfg.min_new_tokens) == (1.1, 77, 2)
    assert cfg.suppress_tokens == (4, 5) and cfg.begin_suppress_tokens == (6,)
    assert cfg.bad_words_ids == ((8, 9),) and cfg.no_repeat_ngram_size == 3
    assert cfg.pad_token_id == 0


def test_caller_values_win_and_eos_override_replaces_union():
    cfg = resolve(
        {"eos_token_id": 7},
        {"temperature": 0.6},
        tok_eos=5,
        overrides={"temperature": 0.2, "eos_token_ids": [11, 11, 12]},
    )
    assert cfg.temperature == 0.2
    assert cfg.eos_token_ids == (11, 12)


@pytest.mark.parametrize(
    "where,key,value,fragment",
    [
        ("config", "eos_token_id", "x", "config.json: eos_token_id='x'"),
        ("gen", "eos_token_id", -1, "generation_config.json: eos_token_id=-1"),
        ("gen", "eos_token_id", [1, 1000], "generation_config.json: eos_token_id=1000"),
        ("gen", "eos_token_id", True, "eos_token_id=True"),
        ("gen", "top_p", 1.5, "top_p=1.5"),
        ("gen", "top_k", -3, "top_k=-3"),
        ("gen", "temperature", "hot", "temperature='hot'"),
        ("gen", "suppress_tokens", [5000], "suppress_tokens=5000"),
        ("gen", "bad_words_ids", [3], "bad_words_ids=[3]"),
        ("gen", "do_sample", "yes", "do_sample='yes'"),
    ],
)
def test_malformed_values_name_file_key_and_value(where, key, value, fragment):
    config, gen = ({key: value}, None) if where == "config" else ({}, {key: value})
    with pytest.raises(ValueError) as err:
        resolve(config, gen)
    assert fragment in str(err.value)


def test_unknown_override_lists_valid_names():
    with pytest.raises(ValueError, match="unknown generation setting.*temprature"):
        apply_overrides(GenerationConfig(), {"temprature": 1.0}, vocab_size=10)


def test_json_dict_round_trip():
    cfg = resolve(
        {"eos_token_id": [7, 0]},
        {"temperature": 0.5, "bad_words_ids": [[1, 2]], "suppress_tokens": [3]},
        tok_eos=9,
    )
    back = resolve({}, json.loads(json.dumps(cfg.to_json_dict())))
    assert back.eos_token_ids == cfg.eos_token_ids == (7, 0, 9)
    assert back.temperature == 0.5 and back.bad_words_ids == ((1, 2),)
    assert back.suppress_tokens == (3,)


@given(
    st.lists(st.integers(0, 50), max_size=6),
    st.lists(st.integers(0, 50), max_size=6),
    st.one_of(st.none(), st.integers(0, 50)),
)
def test_union_property(config_ids, gen_ids, tok):
    cfg = resolve({"eos_token_id": config_ids}, {"eos_token_id": gen_ids}, tok_eos=tok)
    expected = list(dict.fromkeys(config_ids + gen_ids + ([tok] if tok is not None else [])))
    assert list(cfg.eos_token_ids) == expected
