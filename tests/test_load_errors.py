"""Bad input to load(): one clear exception naming the problem, never an MLX traceback."""

from __future__ import annotations

import json

import pytest

from mlx_gen.loading.loader import load
from tests.checkpoints import llama_config, write_checkpoint


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.*not found"):
        load(str(tmp_path / "nope"))


def test_folder_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load(tmp_path)


def test_unknown_model_type_lists_supported(tmp_path):
    write_checkpoint(tmp_path / "m", llama_config(model_type="gpt9000"))
    with pytest.raises(ValueError) as err:
        load(tmp_path / "m")
    assert "'gpt9000' is not supported" in str(err.value)
    assert "llama" in str(err.value) and "qwen2" in str(err.value)


def test_truncated_safetensors_names_the_file(tmp_path):
    write_checkpoint(tmp_path / "m", llama_config())
    path = tmp_path / "m" / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="model.safetensors: cannot read safetensors"):
        load(tmp_path / "m")


def test_shape_mismatch_names_tensor_and_shapes(tmp_path):
    write_checkpoint(tmp_path / "m", llama_config())
    config = llama_config(intermediate_size=48)  # weights were written with 64
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError) as err:
        load(tmp_path / "m")
    msg = str(err.value)
    assert "mlp." in msg and "(64, 32)" in msg.replace("(32, 64)", "(64, 32)") and "48" in msg


def test_missing_tokenizer(tmp_path):
    write_checkpoint(tmp_path / "m", llama_config())
    (tmp_path / "m" / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="no tokenizer found"):
        load(tmp_path / "m")


def test_malformed_generation_config_names_file_key_value(tmp_path):
    write_checkpoint(tmp_path / "m", llama_config(), generation_config={"eos_token_id": "x"})
    with pytest.raises(ValueError) as err:
        load(tmp_path / "m")
    assert "generation_config.json: eos_token_id='x'" in str(err.value)


def test_eos_id_beyond_vocab_names_file(tmp_path):
    write_checkpoint(tmp_path / "m", llama_config(eos_token_id=[2, 320]))
    with pytest.raises(
        ValueError, match=r"config.json: eos_token_id=320 is out of range \(valid ids: 0..319\)"
    ):
        load(tmp_path / "m")


def test_corrupt_json_names_file(tmp_path):
    write_checkpoint(tmp_path / "m", llama_config())
    (tmp_path / "m" / "generation_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="generation_config.json: not valid JSON"):
        load(tmp_path / "m")


def test_non_gguf_file(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"0")
    with pytest.raises(ValueError, match="must be .gguf"):
        load(tmp_path / "weights.bin")


@pytest.mark.parametrize("make_bad", ["missing", "no_config", "truncated", "bad_json"])
def test_each_error_is_one_line_naming_the_path(tmp_path, make_bad):
    folder = tmp_path / "m"
    if make_bad != "missing":
        write_checkpoint(folder, llama_config())
    if make_bad == "no_config":
        (folder / "config.json").unlink()
    elif make_bad == "truncated":
        (folder / "model.safetensors").write_bytes(b"\x00" * 10)
    elif make_bad == "bad_json":
        (folder / "config.json").write_text("[1, 2")
    with pytest.raises((ValueError, FileNotFoundError)) as err:
        load(folder)
    message = str(err.value)
    assert message.count("\n") == 0
    assert str(folder) in message
    assert err.value.__cause__ is None  # no chained traceback from inside MLX
