"""Corrupt and hostile GGUF files: each gives one ``ValueError`` naming the file, never
another exception, a crash or a hang (issue #10, part D)."""

from __future__ import annotations

import contextlib
import io
import struct
import time

import mlx.core as mx
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from mlx_gen.cli.main import main
from mlx_gen.loading.gguf.reader import read_gguf
from mlx_gen.loading.loader import load
from tests.test_gguf import tiny_config, write_model
from tests.test_gguf_architectures import BASE, CASES, random_hf_weights, write_gguf_model


def _string(s: bytes) -> bytes:
    return struct.pack("<Q", len(s)) + s


def test_deeply_nested_metadata_arrays_are_refused(tmp_path):
    path = tmp_path / "nested.gguf"
    depth = 5000  # gguf.GGUFReader recurses once per level: RecursionError
    value = struct.pack("<IQ", 9, 1) * depth + struct.pack("<IQ", 0, 0)
    path.write_bytes(
        b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + _string(b"x.nested") + struct.pack("<I", 9) + value
    )
    with pytest.raises(ValueError, match=rf"{path}.*x.nested nests arrays deeper than 4"):
        read_gguf(path)


def test_one_corrupt_byte_in_the_vocabulary_names_the_file(tmp_path):
    path = tmp_path / "m.gguf"
    write_model(path, tiny_config())
    data = bytearray(path.read_bytes())
    # A merge rule's first token loses its match: the BPE model refuses the merges.
    at = data.index(b"\xc4\xa0t")  # "Ġt", a token also used by merges
    data[at + 2] = ord("!")
    bad = tmp_path / "bad_vocab.gguf"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"{bad}: the tokenizer in the GGUF metadata"):
        read_gguf(bad)
    data[at + 1] = 0xFF  # and invalid UTF-8 in a token
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"{bad}: .*tokenizer.ggml.tokens is not valid UTF-8"):
        read_gguf(bad)


def test_a_corrupt_block_count_is_caught_before_building(tmp_path):
    path = tmp_path / "m.gguf"
    write_model(path, tiny_config())
    data = bytearray(path.read_bytes())
    key = _string(b"llama.block_count") + struct.pack("<I", 4)
    at = data.index(key) + len(key)
    data[at : at + 4] = struct.pack("<I", 1 << 30)
    path.write_bytes(bytes(data))
    message = r"num_hidden_layers = 1073741824, but the tensors imply 2"
    with pytest.raises(ValueError, match=message):
        read_gguf(path)


@pytest.fixture(scope="module")
def fuzz_source(tmp_path_factory):
    """A small model with quantized (Q4_K, Q6_K) and float tensors and a full vocabulary."""
    folder = tmp_path_factory.mktemp("fuzz")
    config = {**BASE, **CASES["qwen3"][1], "hidden_size": 256, "intermediate_size": 256}
    config["head_dim"] = 64
    weights = random_hf_weights(config)
    quantized = {"model.layers.0.mlp.down_proj.weight": T.Q4_K}
    quantized["model.layers.1.self_attn.q_proj.weight"] = T.Q6_K
    write_gguf_model(folder / "m.gguf", "qwen3", config, weights, quantized)
    return (folder / "m.gguf").read_bytes()


def _outcome(path) -> str:
    """ "ok" after a load and forward pass, or "error" for a ValueError naming the file;
    anything else fails the test."""
    try:
        loaded = load(path)
    except ValueError as e:
        assert str(path) in str(e), e
        return "error"
    mx.eval(loaded.model(mx.array([[1, 2, 3]])))
    return "ok"


def test_fuzz_truncations_and_mutations(tmp_path, fuzz_source):
    rng = np.random.default_rng(1234)  # fixed seed: the same cases every run
    data, outcomes = fuzz_source, []
    cases = [("cut", int(n)) for n in rng.integers(0, len(data), 25)]
    header_end = data.index(b"blk.1.ffn_down") + 200  # mutations mostly in the header
    cases += [("flip", int(n)) for n in rng.integers(0, header_end, 50)]
    cases += [("flip", int(n)) for n in rng.integers(header_end, len(data), 10)]
    start = time.monotonic()
    for i, (kind, at) in enumerate(cases):
        case = bytearray(data[:at]) if kind == "cut" else bytearray(data)
        if kind == "flip":
            case[at] ^= int(rng.integers(1, 256))
        path = tmp_path / f"case{i}.gguf"
        path.write_bytes(bytes(case))
        outcomes.append(_outcome(path))
        path.unlink()
    assert outcomes.count("error") >= 25  # every truncation, at least
    assert time.monotonic() - start < 300  # bounded: no case hangs


def _set_uint32(path, key: str, value: int) -> None:
    """Overwrite the uint32 metadata value of ``key`` in the GGUF file at ``path``."""
    data = bytearray(path.read_bytes())
    name = _string(key.encode()) + struct.pack("<I", 4)  # type 4: uint32
    at = data.index(name) + len(name)
    data[at : at + 4] = struct.pack("<I", value)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "key",
    [
        "llama.attention.head_count",
        "llama.attention.head_count_kv",
        "llama.embedding_length",
        "llama.block_count",
        "llama.feed_forward_length",
        "llama.context_length",
        "llama.rope.dimension_count",
    ],
)
def test_a_zero_count_is_refused_before_any_size_is_derived(tmp_path, key):
    # Before: head_count = 0 was a ZeroDivisionError traceback (CLI, server, convert).
    path = tmp_path / "m.gguf"
    write_model(path, tiny_config())
    _set_uint32(path, key, 0)
    with pytest.raises(ValueError, match=rf"^{path}: GGUF metadata {key}=0 is invalid \(expected"):
        load(path)


def test_a_zero_head_count_is_one_error_line_on_the_command_line(tmp_path):
    path = tmp_path / "m.gguf"
    write_model(path, tiny_config())
    _set_uint32(path, "llama.attention.head_count", 0)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["--model", str(path), "--prompt", "a", "--max-tokens", "1"])
    assert code == 2
    assert err.getvalue() == (
        f"error: {path}: GGUF metadata llama.attention.head_count=0 is invalid "
        f"(expected an int in [1, 2147483647]); the file is corrupt\n"
    )


def test_a_zero_head_count_is_one_error_line_from_convert_and_the_server(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from mlx_gen.convert.main import main as convert_main

    path = tmp_path / "m.gguf"
    write_model(path, tiny_config())
    _set_uint32(path, "llama.attention.head_count", 0)
    line = (
        f"error: {path}: GGUF metadata llama.attention.head_count=0 is invalid "
        f"(expected an int in [1, 2147483647]); the file is corrupt\n"
    )
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = convert_main(["--hf-path", str(path), "--mlx-path", str(tmp_path / "out")])
    assert (code, err.getvalue()) == (2, line)
    assert not (tmp_path / "out").exists()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "mlx_gen.server", "--model", str(path), "--port", "0"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert (done.returncode, done.stderr, done.stdout) == (2, line, "")
