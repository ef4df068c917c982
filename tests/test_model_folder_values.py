"""A model folder's values are checked before anything is built: one error naming the file.

Each case is a copy of stories260K (5 layers, hidden 64, vocab 512) with one value
changed; ``load`` must raise one ``ValueError`` naming the file, the key and the value
at once (no model of a million layers built first), and the CLI must exit 2 with one
``error:`` line.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import pytest

import mlx_gen as mg
from mlx_gen.loading.config_validation import check_config
from tests.conftest import STORIES
from tests.test_model_folder_code import copy_stories, edit_json, one_error_line, run_cli


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return copy_stories(tmp_path / "m")


@pytest.mark.parametrize(
    ("key", "value", "valid"),
    [
        ("num_hidden_layers", 1_000_000, "[1, 5]; the weights hold 5 layer(s)"),
        ("num_attention_heads", 0, "[1, 32768]"),
        ("hidden_size", "abc", "[1, 32768]"),
        ("hidden_size", 2**40, "[1, 32768]; no weight tensor has more than 32768 elements"),
        ("num_key_value_heads", -1, "[1, 32768]"),
        ("intermediate_size", 1.5, "[1, 32768]"),
        ("vocab_size", True, "[1, 32768]"),
        ("max_position_embeddings", 0, "[1, 2147483647]"),
    ],
)
def test_config_values_are_checked_against_the_weights(model, key, value, valid):
    edit_json(model / "config.json", **{key: value})
    with pytest.raises(ValueError) as err:
        mg.load(model)
    expected = f"{model / 'config.json'}: {key}={value!r} is invalid (expected an int in {valid}"
    assert str(err.value).startswith(expected)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("rope_theta", "x", "rope_theta='x' is invalid (expected a finite number)"),
        ("rms_norm_eps", "x", "rms_norm_eps='x' is invalid (expected a finite number)"),
        (
            "tie_word_embeddings",
            "yes",
            "tie_word_embeddings='yes' is invalid (expected true/false)",
        ),
        ("rope_scaling", "x", "rope_scaling='x' is invalid (expected an object)"),
        ("model_type", 5, "config.json has no model_type (got 5)"),
    ],
)
def test_config_types_follow_mlx_lm_model_args(tmp_path, key, value, expected):
    # SentencePiece only: transformers never reads this config.json, so mlx_gen's check speaks.
    model = copy_stories(tmp_path / "m", sentencepiece_only=True)
    edit_json(model / "config.json", **{key: value})
    with pytest.raises(ValueError) as err:
        mg.load(model)
    assert expected in str(err.value) and str(model) in str(err.value)


def test_config_transformers_rejects_is_named_as_config_json(model):
    edit_json(model / "config.json", rms_norm_eps="x")
    with pytest.raises(ValueError) as err:
        mg.load(model)
    assert str(err.value).startswith(f"{model / 'config.json'}: transformers cannot read it (")
    assert "rms_norm_eps" in str(err.value)


def test_a_million_layers_is_refused_at_once_by_the_cli(model):
    edit_json(model / "config.json", num_hidden_layers=1_000_000)
    done = run_cli("--model", str(model), "--prompt", "Once", "--max-tokens", "3")
    assert done.returncode == 2 and done.stdout == ""
    assert "num_hidden_layers=1000000 is invalid" in one_error_line(done.stderr)


@pytest.mark.parametrize(
    ("quantization", "expected"),
    [
        ("abc", "quantization='abc' is invalid"),
        (
            {"bits": 0, "group_size": 64},
            "quantization: bits=0 is invalid (expected an int in [1, 8",
        ),
        ({"bits": 4, "group_size": "x"}, "quantization: group_size='x' is invalid"),
    ],
)
def test_quantization_block_is_checked(model, quantization, expected):
    edit_json(model / "config.json", quantization=quantization)
    with pytest.raises(ValueError, match="config.json") as err:
        mg.load(model)
    assert expected in str(err.value)


def test_text_config_is_checked_too():
    weights = {"model.layers.0.w": _Shape((4, 8))}
    with pytest.raises(ValueError, match=r"c.json text_config: hidden_size=0 is invalid"):
        check_config({"text_config": {"hidden_size": 0}}, weights, source="c.json")
    check_config({"text_config": {"hidden_size": 32, "num_hidden_layers": 1}}, weights, source="c")


class _Shape:
    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape


@pytest.mark.parametrize(
    "name",
    [
        "config.json",
        "generation_config.json",
        "tokenizer_config.json",
        "model.safetensors.index.json",
        "tokenizer.json",
    ],
)
@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
        (b'\xff\xfe{"a": 1}', "not UTF-8 text (byte 0: invalid start byte)"),
    ],
)
def test_unreadable_json_names_the_file(model, name, content, expected):
    (model / name).write_bytes(content)
    with pytest.raises(ValueError) as err:
        mg.load(model)
    assert str(err.value).startswith(f"{model / name}: ")
    # tokenizer.json is parsed by mlx-lm/tokenizers: their words, in mlx_gen's frame.
    frame = "cannot load the tokenizer (" if name == "tokenizer.json" else expected
    assert frame in str(err.value)


def test_malformed_tokenizer_json_names_the_file(model):
    (model / "tokenizer.json").write_text('{"model": {}}')
    with pytest.raises(ValueError) as err:
        mg.load(model)
    assert str(err.value).startswith(f"{model / 'tokenizer.json'}: cannot load the tokenizer (")


# model.safetensors.index.json: a map of names to shard files inside the folder


@pytest.mark.parametrize(
    ("weight_map", "expected"),
    [
        (["model.safetensors"], "weight_map is a list (expected an object mapping"),
        ({"lm_head.weight": 3}, "weight_map value 3 is invalid (expected a .safetensors file"),
        ({"x": "config.json"}, "weight_map value 'config.json' is invalid"),
        ({"x": "OUTSIDE"}, "points outside the model folder"),
        ({"x": "../other/model.safetensors"}, "points outside the model folder"),
        ({"x": "sub/../../other/model.safetensors"}, "points outside the model folder"),
    ],
)
def test_index_weight_map_is_checked(tmp_path, model, weight_map, expected):
    other = copy_stories(tmp_path / "other")  # valid weights the index must not reach
    if weight_map == {"x": "OUTSIDE"}:
        weight_map = {"x": str(other / "model.safetensors")}
    (model / "model.safetensors").rename(model / "model-00001-of-00001.safetensors")
    index = model / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(ValueError) as err:
        mg.load(model)
    assert str(err.value).startswith(f"{index}: ") and expected in str(err.value)


def test_index_with_shards_in_a_subfolder_loads(model):
    (model / "shards").mkdir()
    (model / "model.safetensors").rename(model / "shards" / "model.safetensors")
    names = mx.load(str(model / "shards" / "model.safetensors"))
    index = {"weight_map": dict.fromkeys(names, "shards/model.safetensors")}
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    prompt = [1, 403, 407]
    expected = mg.generate(mg.load(STORIES), prompt, settings=mg.GenerationSettings(max_tokens=5))
    got = mg.generate(mg.load(model), prompt, settings=mg.GenerationSettings(max_tokens=5))
    assert got.token_ids == expected.token_ids and len(got.token_ids) == 5


# generation_config.json: refused at load, naming the file, the key and the valid range


@pytest.mark.parametrize(
    ("key", "value", "valid"),
    [
        ("temperature", "hot", "expected a finite number in [0.0, inf]"),
        ("temperature", float("inf"), "expected a finite number in [0.0, inf]"),
        ("top_p", 7, "expected a finite number in [0.0, 1.0]"),
        ("top_p", 0, "expected a number in (0, 1]"),
        ("min_p", 1.0, "expected a number in [0, 1)"),
        ("repetition_penalty", 0, "expected a number in (0, inf)"),
        ("max_new_tokens", -1, "expected an int in [0, inf]"),
        ("top_k", 2.5, "expected an int in [0, inf]"),
        ("eos_token_id", -3, "out of range (valid ids: 0..511)"),
        ("eos_token_id", "x", "is not a token id (expected an int >= 0)"),
        ("suppress_tokens", [512], "out of range (valid ids: 0..511)"),
    ],
)
def test_generation_config_values_are_refused_at_load(model, key, value, valid):
    edit_json(model / "generation_config.json", **{key: value})
    with pytest.raises(ValueError) as err:
        mg.load(model)
    message = str(err.value)
    assert message.startswith(f"{model / 'generation_config.json'}: {key}=")
    assert valid in message


def test_generation_config_error_is_one_cli_line(model):
    edit_json(model / "generation_config.json", top_p=7)
    done = run_cli("--model", str(model), "--prompt", "Once", "--max-tokens", "3")
    assert done.returncode == 2 and done.stdout == ""
    line = one_error_line(done.stderr)
    assert "generation_config.json: top_p=7 is invalid" in line and "--top-p" not in line
