"""convert: round trips on values, the folder layout mlx-lm reads, safe writes, CLI errors."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx_lm
import numpy as np
import pytest
import sentencepiece as spm
from mlx.utils import tree_flatten
from mlx_lm.models.cache import make_prompt_cache
from safetensors.numpy import save_file

import mlx_gen.convert.main as convert_module
from mlx_gen.convert.main import convert, format_size, main
from mlx_gen.loading.default_model import default_model_path
from mlx_gen.loading.generation_config import GenerationConfig
from mlx_gen.loading.loader import LoadedModel, load, read_checkpoint, resolve_checkpoint_config
from mlx_gen.loading.sentencepiece_tokenizer import SentencePieceTokenizer
from tests.checkpoints import CHATML, llama_config, write_checkpoint

REPO = Path(__file__).resolve().parents[1]
IDS = [5, 17, 42, 99, 7]
# hidden 64 / intermediate 128: every layer's input size is a multiple of the default
# group size 64, so quantization reaches every linear layer and the embedding.
WIDE = {"hidden_size": 64, "intermediate_size": 128}


def logits_of(model: nn.Module, ids: list[int]) -> np.ndarray:
    out = model(mx.array([ids]))
    mx.eval(out)
    return np.array(out[0].astype(mx.float32))


def greedy(model: nn.Module, prompt: list[int], steps: int = 64) -> list[int]:
    """Free-running greedy decoding with a KV cache."""
    cache = make_prompt_cache(model)
    logits = model(mx.array(prompt)[None], cache=cache)
    out = []
    for _ in range(steps):
        token = mx.argmax(logits[0, -1]).item()
        out.append(token)
        logits = model(mx.array([[token]]), cache=cache)
    return out


def agreement(a: list[int] | np.ndarray, b: list[int] | np.ndarray) -> float:
    return float(np.mean(np.array(a) == np.array(b)))


def settings(config: GenerationConfig) -> GenerationConfig:
    """``config`` without the ``eos_sources`` bookkeeping (which file named which id)."""
    return replace(config, eos_sources={})


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir())


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """A tiny float32 Llama whose layers are all quantizable with group size 64."""
    write_checkpoint(tmp_path / "src", llama_config(**WIDE))
    return tmp_path / "src"


def write_peaked_checkpoint(folder: Path, seed: int = 7) -> None:
    """A tiny random Llama whose greedy path is stable enough to compare under 8-bit noise.

    Plain random models have near-uniform logits and are chaotic: 8-bit noise (largest
    logit error about 0.1) flips a near-tie within a few steps and the two greedy runs
    part for good (4-25% agreement measured over 8 seeds). Here ``lm_head`` is the
    embedding with its rows permuted (a next-token lookup with a wide margin) and the
    layer weights are scaled by 0.4 so they still change about 10% of the greedy choices
    (so the quantized layers matter). Measured on seed 7: free-running 8-bit agreement
    100% (4-bit: 19%), teacher-forced 100% (4-bit: 93%); 99-100% teacher-forced over seeds 0-7.
    """
    config = llama_config(**WIDE)
    weights = write_checkpoint(folder, config, seed=seed)
    for name in weights:
        if "_proj" in name:
            weights[name] = weights[name] * 0.4
    perm = np.random.default_rng(100 + seed).permutation(config["vocab_size"])
    weights["lm_head.weight"] = weights["model.embed_tokens.weight"][perm]
    save_file(weights, str(folder / "model.safetensors"))


# Round trips on values


def test_float32_round_trip_gives_the_same_logits(src, tmp_path):
    report = convert(src, tmp_path / "dst", dtype="float32")
    before, after = load(src), load(tmp_path / "dst")
    diff = np.abs(logits_of(before.model, IDS) - logits_of(after.model, IDS)).max()
    assert diff <= 1e-5  # measured 0.0
    assert report.source_bytes == report.output_bytes > 0 and report.precision == "float32"
    names = {p.name for p in (tmp_path / "dst").iterdir()}
    assert {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "model.safetensors.index.json",
        "tokenizer.json",
        "tokenizer_config.json",
    } <= names


def test_8bit_tiny_model_greedy_agrees(tmp_path):
    write_peaked_checkpoint(tmp_path / "src")
    convert(tmp_path / "src", tmp_path / "q8", quantize=True, q_bits=8)
    source, quantized = load(tmp_path / "src").model, load(tmp_path / "q8").model
    tokens = greedy(source, IDS)
    assert agreement(tokens, greedy(quantized, IDS)) >= 0.95
    # Teacher-forced: next-token argmax after the same prefix, no compounding.
    seq = IDS + tokens
    forced = agreement(logits_of(source, seq).argmax(-1), logits_of(quantized, seq).argmax(-1))
    assert forced >= 0.95


def test_8bit_stories260k_greedy_agrees(stories_dir, tmp_path):
    report = convert(stories_dir, tmp_path / "q8", quantize=True, q_bits=8)
    source, quantized = load(stories_dir), load(tmp_path / "q8")
    prompt = source.tokenizer.encode("Once upon a time")
    assert prompt == [1, 403, 407, 261, 378]
    assert agreement(greedy(source.model, prompt), greedy(quantized.model, prompt)) >= 0.95
    assert report.output_bytes < 0.5 * report.source_bytes  # 1.0 MB -> 452.8 kB measured


def test_4bit_layout_is_what_mlx_lm_loads(src, tmp_path):
    dst = tmp_path / "q4"
    report = convert(src, dst, quantize=True)
    config = json.loads((dst / "config.json").read_text())
    assert (
        config["quantization"]
        == config["quantization_config"]
        == {"group_size": 64, "bits": 4, "mode": "affine"}
    )
    assert list(config) == sorted(config)
    model = load(dst).model
    linears = [
        m for _, m in model.named_modules() if isinstance(m, (nn.Linear, nn.QuantizedLinear))
    ]
    assert len(linears) == 2 * 7 + 1  # 7 per layer + lm_head, all quantized
    assert all(
        isinstance(m, nn.QuantizedLinear) and (m.bits, m.group_size) == (4, 64) for m in linears
    )
    assert isinstance(model.model.embed_tokens, nn.QuantizedEmbedding)
    assert report.precision == "4-bit" and report.output_bytes < report.source_bytes / 5
    lm_model, lm_tokenizer = mlx_lm.load(str(dst))
    assert np.array_equal(logits_of(lm_model, IDS), logits_of(model, IDS))
    assert lm_tokenizer.encode("the word") == load(dst).tokenizer.encode("the word")


def test_sharded_output_reports_progress(src, tmp_path):
    calls = []
    report = convert(
        src, tmp_path / "dst", max_shard_bytes=100_000, progress=lambda *args: calls.append(args)
    )
    index = json.loads((tmp_path / "dst" / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert report.shards == len(files) == len(calls) > 1
    assert [c[:3] for c in calls] == [(i + 1, len(files), f) for i, f in enumerate(files)]
    assert sum(c[3] for c in calls) == index["metadata"]["total_size"] == report.output_bytes
    np.testing.assert_array_equal(
        logits_of(load(tmp_path / "dst").model, IDS), logits_of(load(src).model, IDS)
    )


# Already-quantized sources


def test_quantized_source_is_dequantized_or_requantized(src, tmp_path):
    convert(src, tmp_path / "q4", quantize=True)
    q4 = load(tmp_path / "q4").model
    convert(tmp_path / "q4", tmp_path / "same")  # no options: layers stay as stored
    np.testing.assert_array_equal(logits_of(load(tmp_path / "same").model, IDS), logits_of(q4, IDS))

    convert(tmp_path / "q4", tmp_path / "f32", dtype="float32")
    f32 = load(tmp_path / "f32")
    assert "quantization" not in f32.config and "quantization_config" not in f32.config
    assert not any(isinstance(m, nn.QuantizedLinear) for _, m in f32.model.named_modules())
    np.testing.assert_allclose(logits_of(f32.model, IDS), logits_of(q4, IDS), atol=1e-4)

    convert(tmp_path / "q4", tmp_path / "q8", quantize=True, q_bits=8, q_group_size=32)
    q8 = load(tmp_path / "q8")
    assert q8.config["quantization"]["bits"] == 8
    assert q8.model.model.layers[0].mlp.down_proj.bits == 8
    # 8-bit of the dequantized 4-bit weights stays close to the 4-bit model: measured 0.097,
    # against 2.07 between the 4-bit model and its float32 source.
    error_4bit = np.abs(logits_of(q4, IDS) - logits_of(load(src).model, IDS)).max()
    assert np.abs(logits_of(q8.model, IDS) - logits_of(q4, IDS)).max() < 0.2 * error_4bit


def test_group_size_that_fits_no_layer_is_refused(tmp_path):
    write_checkpoint(tmp_path / "src", llama_config(hidden_size=32, intermediate_size=96))
    with pytest.raises(ValueError, match="q_group_size=128.*try q_group_size 32 or 64"):
        convert(tmp_path / "src", tmp_path / "dst", quantize=True, q_group_size=128)
    assert siblings(tmp_path / "dst") == ["src"]


# Generation settings and tokenizers


def test_generation_config_and_chat_template_survive(tmp_path):
    gen = {
        "eos_token_id": [3, 0],
        "bos_token_id": 1,
        "pad_token_id": 0,
        "do_sample": True,
        "temperature": 0.7,
        "top_k": 20,
        "top_p": 0.9,
        "suppress_tokens": [7, 9],
        "begin_suppress_tokens": [4],
        "bad_words_ids": [[11, 12]],
        "max_new_tokens": 50,
        "transformers_version": "4.46.0",
    }
    write_checkpoint(tmp_path / "src", llama_config(eos_token_id=[5, 0]), generation_config=gen)
    convert(tmp_path / "src", tmp_path / "dst", quantize=True, q_bits=8, q_group_size=32)
    before = resolve_checkpoint_config(read_checkpoint(tmp_path / "src"))
    after = resolve_checkpoint_config(read_checkpoint(tmp_path / "dst"))
    # config.json [5, 0] ∪ generation_config.json [3, 0] ∪ tokenizer "<|im_end|>" (2)
    assert before.eos_token_ids == after.eos_token_ids == (5, 0, 3, 2)
    assert settings(after) == settings(before)
    assert after.suppress_tokens == (7, 9) and after.temperature == 0.7
    written = json.loads((tmp_path / "dst" / "generation_config.json").read_text())
    assert written["transformers_version"] == "4.46.0"  # unknown keys are kept
    assert json.loads((tmp_path / "dst" / "config.json").read_text())["eos_token_id"] == [5, 0]
    assert load(tmp_path / "dst").tokenizer.chat_template == CHATML
    _, lm_tokenizer = mlx_lm.load(str(tmp_path / "dst"))
    assert lm_tokenizer.eos_token_ids == {5, 0, 3, 2}


def write_sentencepiece_checkpoint(folder: Path) -> None:
    """A tiny Llama with only a SentencePiece ``tokenizer.model`` (trained here, offline)."""
    write_checkpoint(folder, llama_config(), generation_config={"eos_token_id": 2})
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    lines = [
        "the quick brown fox jumps over the lazy dog",
        "hello world, the word is near",
        "once upon a time there was a tiny model",
    ] * 20
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        vocab_size=60,
        model_type="bpe",
        minloglevel=2,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
    )
    (folder / "tokenizer.model").write_bytes(model.getvalue())
    settings = {"add_bos_token": False, "chat_template": "{{ messages[0]['content'] }}!"}
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))


def test_sentencepiece_only_tokenizer_keeps_its_settings(tmp_path):
    write_sentencepiece_checkpoint(tmp_path / "src")
    convert(tmp_path / "src", tmp_path / "dst")
    before, after = load(tmp_path / "src"), load(tmp_path / "dst")
    assert isinstance(after.tokenizer._tokenizer, SentencePieceTokenizer)
    assert not (tmp_path / "dst" / "tokenizer.json").exists()
    text = "hello world, once upon a time"
    assert after.tokenizer.encode(text) == before.tokenizer.encode(text)
    assert after.tokenizer.encode(text)[0] != 1  # add_bos_token=False survived
    messages = [{"role": "user", "content": "hi"}]
    assert after.tokenizer.apply_chat_template(messages, tokenize=False) == "hi!"
    assert settings(after.generation_config) == settings(before.generation_config)


@pytest.fixture
def gguf_model() -> LoadedModel:
    """The embedded SmolLM2 Q4_1 GGUF (skips when absent or the GGUF reader is missing)."""
    try:
        return load(default_model_path())
    except (FileNotFoundError, NotImplementedError) as e:
        pytest.skip(f"default GGUF model unavailable: {type(e).__name__}: {e}")


def test_gguf_converts_as_stored_or_to_float16(gguf_model, tmp_path):
    # Values are compared on weights, not logits: a CPU forward pass of this 135M model
    # takes seconds per prompt.
    source, gguf_path = gguf_model, gguf_model.source
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = source.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    source_weights = dict(tree_flatten(source.model.parameters()))

    convert(gguf_path, tmp_path / "q")  # no -q, no --dtype: the Q4_1/Q8_0 layers stay as stored
    same = load(tmp_path / "q")
    assert same.config["rope_traditional"] is True and same.config["quantization"]["bits"] == 4
    assert same.tokenizer.chat_template == source.tokenizer.chat_template
    assert same.tokenizer.apply_chat_template(messages, add_generation_prompt=True) == prompt
    assert settings(same.generation_config) == settings(source.generation_config)
    same_weights = dict(tree_flatten(same.model.parameters()))
    assert same_weights.keys() == source_weights.keys()
    assert all(mx.array_equal(same_weights[k], v).item() for k, v in source_weights.items())
    lm_model, _ = mlx_lm.load(str(tmp_path / "q"), lazy=True)  # mixed bits load there too
    assert (lm_model.model.embed_tokens.bits, lm_model.model.layers[0].mlp.up_proj.bits) == (8, 4)
    lm_q = lm_model.model.layers[0].mlp.up_proj.weight
    assert mx.array_equal(lm_q, source_weights["model.layers.0.mlp.up_proj.weight"]).item()

    convert(gguf_path, tmp_path / "f16", dtype="float16")  # --dtype: a float16 model
    f16 = load(tmp_path / "f16")
    assert "quantization" not in f16.config and f16.config["rope_traditional"] is True
    assert settings(f16.generation_config) == settings(source.generation_config)
    assert f16.tokenizer.apply_chat_template(messages, add_generation_prompt=True) == prompt
    for name in ("model.layers.0.self_attn.q_proj", "model.embed_tokens"):
        w, scales, biases = (source_weights[f"{name}.{k}"] for k in ("weight", "scales", "biases"))
        bits = w.shape[-1] // scales.shape[-1]  # uint32 words per group of 32 weights
        expected = mx.dequantize(w, scales, biases, group_size=32, bits=bits)
        got = dict(tree_flatten(f16.model.parameters()))[f"{name}.weight"]
        assert got.dtype == mx.float16
        assert mx.array_equal(got, expected.astype(mx.float16)).item()


# Safe writes


def test_failure_mid_write_leaves_no_output_and_no_temp_folder(src, tmp_path, monkeypatch):
    def broken_writer(folder, model, **_):
        (folder / "model-00001-of-00002.safetensors").write_bytes(b"partial")
        raise RuntimeError("disk went away")

    monkeypatch.setattr(convert_module, "write_weights", broken_writer)
    with pytest.raises(RuntimeError, match="disk went away"):
        convert(src, tmp_path / "dst")
    assert siblings(tmp_path / "dst") == ["src"]


def test_force_replaces_only_after_the_new_folder_is_complete(src, tmp_path, monkeypatch):
    dst = tmp_path / "dst"
    write_checkpoint(dst, llama_config())  # --force replaces only a model folder
    (dst / "keep.txt").write_text("old")
    before = sorted(p.name for p in dst.iterdir())
    monkeypatch.setattr(convert_module, "write_weights", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        convert(src, dst, force=True)
    assert sorted(p.name for p in dst.iterdir()) == before and siblings(dst) == ["dst", "src"]
    monkeypatch.undo()
    convert(src, dst, force=True)
    assert not (dst / "keep.txt").exists() and (dst / "config.json").exists()
    assert siblings(dst) == ["dst", "src"]


def test_empty_existing_folder_is_used_without_force(src, tmp_path):
    (tmp_path / "dst").mkdir()
    convert(src, tmp_path / "dst")
    assert (tmp_path / "dst" / "config.json").exists()


def test_output_holding_the_source_is_refused(src, tmp_path):
    with pytest.raises(ValueError, match="holds the source"):
        convert(src, tmp_path, force=True)
    with pytest.raises(ValueError, match="holds the source"):
        convert(src, src, force=True)


# CLI


def test_cli_refuses_existing_output_without_force(src, tmp_path, capsys):
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "keep.txt").write_text("old")
    assert main(["--hf-path", str(src), "--mlx-path", str(dst)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(dst) in line and "--force" in line
    assert [p.name for p in dst.iterdir()] == ["keep.txt"]
    assert (dst / "keep.txt").read_text() == "old"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-q", "--q-bits", "3"], "invalid choice: 3 (choose from 4, 8)"),
        (["-q", "--q-group-size", "48"], "invalid choice: 48 (choose from 32, 64, 128)"),
        (["--dtype", "float8"], "invalid choice: 'float8' (choose from 'float16', 'bfloat16'"),
        (["--q-bits", "8"], "--q-bits/--q-group-size need -q"),
    ],
)
def test_cli_bad_options(src, tmp_path, capsys, args, expected):
    assert main(["--hf-path", str(src), "--mlx-path", str(tmp_path / "dst"), *args]) == 2
    assert expected in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "dst").exists()


def test_cli_bad_sources(tmp_path, capsys):
    missing = tmp_path / "nope"
    assert main(["--hf-path", str(missing), "--mlx-path", str(tmp_path / "dst")]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(missing) in line and "not found" in line

    write_checkpoint(tmp_path / "odd", llama_config(model_type="gpt9000"))
    assert main(["--hf-path", str(tmp_path / "odd"), "--mlx-path", str(tmp_path / "dst")]) == 2
    assert "'gpt9000' is not supported; supported: " in one_error_line(capsys.readouterr().err)

    write_checkpoint(tmp_path / "cut", llama_config())
    weights = tmp_path / "cut" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert main(["--hf-path", str(tmp_path / "cut"), "--mlx-path", str(tmp_path / "dst")]) == 2
    assert "model.safetensors: cannot read" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "dst").exists()


def test_library_validates_options(src, tmp_path):
    with pytest.raises(ValueError, match=r"q_bits=3 is invalid; valid: 4, 8"):
        convert(src, tmp_path / "dst", quantize=True, q_bits=3)
    with pytest.raises(ValueError, match=r"dtype='half' is invalid; valid: float16"):
        convert(src, tmp_path / "dst", dtype="half")


def test_cli_prints_progress_and_sizes(src, tmp_path, capsys):
    assert main(["--hf-path", str(src), "--mlx-path", str(tmp_path / "dst"), "-q"]) == 0
    out = capsys.readouterr()
    assert out.out == ""
    assert "wrote model.safetensors (1/1, " in out.err
    assert re.search(r"^source \d+\.\d kB -> \d+\.\d kB \(4-bit\); saved to ", out.err, re.M)


def test_format_size():
    sizes = [999, 1_500, 540_100_000, 2_500_000_000, 12_345_000_000_000]
    assert [format_size(n) for n in sizes] == [
        "999 B",
        "1.5 kB",
        "540.1 MB",
        "2.5 GB",
        "12345.0 GB",
    ]


def test_convert_script_runs_from_the_repo_root(src, tmp_path):
    dst = tmp_path / "dst"
    cmd = [
        sys.executable,
        "convert.py",
        "--hf-path",
        str(src),
        "--mlx-path",
        str(dst),
        "-q",
        "--q-bits",
        "8",
        "--q-group-size",
        "32",
    ]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "(8-bit)" in done.stderr and done.stdout == ""
    assert load(dst).config["quantization"]["bits"] == 8
