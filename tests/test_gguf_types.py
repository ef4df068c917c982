"""Every quantized ggml type mlx_gen loads, against llama.cpp's own decoder.

Files are written with ``gguf.GGUFWriter`` (llama.cpp's Python package): random valid
blocks with realistic scales, or weights quantized by ``gguf.quants.quantize`` where it
supports the type. The loaded MLX arrays, decoded by ``mx.dequantize`` (or the group-16
layer), must equal ``gguf.quants.dequantize`` exactly in exact precision and within the
documented bound in compact precision.
"""

from __future__ import annotations

import gguf
import mlx.core as mx
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize

from mlx_gen.loading.gguf.header import read_header
from mlx_gen.loading.gguf.tensors import load_tensor
from mlx_gen.loading.subblock import SubBlockEmbedding, SubBlockLinear
from tests.gguf_blocks import F16_FIELDS, random_blocks

SHAPE = (6, 768)  # three 256-superblocks per row
QUANTIZABLE = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]  # gguf.quants.quantize supports these
COMPACT_BOUND = {"Q6_K": 1e-2}  # re-quantized to 8 bits in groups of 64
DEFAULT_COMPACT_BOUND = 2e-3  # float16 scales and float16 output: max |err| / max |w|


def write(path, tensors: dict[str, tuple[np.ndarray, T]]) -> None:
    writer = gguf.GGUFWriter(path, "llama")
    for name, (raw, kind) in tensors.items():
        writer.add_tensor(name, raw, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def decoded(loaded) -> np.ndarray:
    a = loaded.arrays
    if loaded.group_size == 16:
        layer = SubBlockLinear(SHAPE[1], SHAPE[0], bias=False, bits=loaded.bits)
        layer.update({k: a[k] for k in ("weight", "scales", "biases")})
        out = layer.dense_weight()
    else:
        out = mx.dequantize(
            a["weight"], a["scales"], a["biases"], group_size=loaded.group_size, bits=loaded.bits
        )
    return np.array(out.astype(mx.float32))


@pytest.fixture(scope="module")
def typed_file(tmp_path_factory):
    """One file with a random-block tensor per type, plus gguf-quantized weights."""
    rng = np.random.default_rng(7)
    tensors = {f"{t}.weight": (random_blocks(t, SHAPE, rng), T[t]) for t in F16_FIELDS}
    weights = (rng.standard_normal(SHAPE) * 0.02).astype(np.float32)
    for t in QUANTIZABLE:
        tensors[f"q_{t}.weight"] = (quantize(weights, T[t]), T[t])
    tensors["bf16.weight"] = (quantize(weights, T.BF16), T.BF16)
    path = tmp_path_factory.mktemp("types") / "types.gguf"
    write(path, tensors)
    return path, tensors


def _load(path, name, precision):
    header = read_header(path)
    info = next(t for t in header.tensors if t.name == name)
    return load_tensor(np.memmap(path, np.uint8, mode="r"), info, precision)


@pytest.mark.parametrize(
    "name", [*(f"{t}.weight" for t in F16_FIELDS), *(f"q_{t}.weight" for t in QUANTIZABLE)]
)
def test_exact_precision_is_bit_exact(typed_file, name):
    path, tensors = typed_file
    raw, kind = tensors[name]
    loaded = _load(path, name, "exact")
    assert loaded.arrays["scales"].dtype == mx.float32
    reference = dequantize(raw, kind)
    assert reference.shape == SHAPE
    np.testing.assert_array_equal(decoded(loaded), reference)


@pytest.mark.parametrize("kind", list(F16_FIELDS))
def test_compact_precision_within_bound(typed_file, kind):
    path, tensors = typed_file
    raw, qtype = tensors[f"{kind}.weight"]
    loaded = _load(path, f"{kind}.weight", "compact")
    assert loaded.arrays["scales"].dtype == mx.float16
    reference = dequantize(raw, qtype)
    error = np.abs(decoded(loaded) - reference).max() / np.abs(reference).max()
    assert 0 < error <= COMPACT_BOUND.get(kind, DEFAULT_COMPACT_BOUND)
    if kind in COMPACT_BOUND:
        assert (loaded.bits, loaded.group_size) == (8, 64)


def test_bf16_is_kept_bit_exact(typed_file):
    path, tensors = typed_file
    raw, kind = tensors["bf16.weight"]
    loaded = _load(path, "bf16.weight", "exact")
    assert loaded.arrays["weight"].dtype == mx.bfloat16
    np.testing.assert_array_equal(
        np.array(loaded.arrays["weight"].astype(mx.float32)), dequantize(raw, kind)
    )


@pytest.mark.parametrize("kind", ["Q6_K", "Q2_K"])
def test_subblock_layers_compute_with_the_exact_weights(typed_file, kind):
    path, tensors = typed_file
    raw, qtype = tensors[f"{kind}.weight"]
    loaded = _load(path, f"{kind}.weight", "exact")
    reference = dequantize(raw, qtype).astype(np.float64)
    x = np.random.default_rng(1).standard_normal((3, SHAPE[1])).astype(np.float32)
    linear = SubBlockLinear(SHAPE[1], SHAPE[0], bias=False, bits=loaded.bits)
    linear.update(loaded.arrays)
    y = np.array(linear(mx.array(x)))
    # float32 sums in another order: error ~ eps * sum |x_i w_i|.
    bound = 1e-6 * (np.abs(x) @ np.abs(reference).T)
    assert (np.abs(y - x @ reference.T) <= bound).all()
    embedding = SubBlockEmbedding(*SHAPE, bits=loaded.bits)
    embedding.update(loaded.arrays)
    rows = np.array(embedding(mx.array([[4, 0, 5]])))
    np.testing.assert_array_equal(rows[0], reference[[4, 0, 5]].astype(np.float32))
    assert (np.abs(np.array(embedding.as_linear(mx.array(x))) - y) <= bound).all()


def test_mx_load_still_decodes_q4_k_wrongly(typed_file, monkeypatch):
    # Regression guard (MLX 0.32.4): mx.load gives every second 32-element half of a
    # Q4_K superblock the first half's scale and min. If this starts failing, MLX fixed
    # it; mlx_gen still packs the codes itself (checked below).
    path, tensors = typed_file
    raw, kind = tensors["Q4_K.weight"]
    reference = dequantize(raw, kind)
    try:
        mlx_value = np.array(mx.load(str(path))["Q4_K.weight"].astype(mx.float32))
    except Exception:  # MLX aborts on the other types in the same file
        path = path.with_name("q4k_only.gguf")
        write(path, {"Q4_K.weight": (raw, kind)})
        mlx_value = np.array(mx.load(str(path))["Q4_K.weight"].astype(mx.float32))
    assert np.abs(mlx_value - reference).max() > 0.1 * np.abs(reference).max()

    def refuse(*args, **kwargs):
        raise AssertionError("mlx_gen must not read GGUF tensors with mx.load")

    monkeypatch.setattr(mx, "load", refuse)
    np.testing.assert_array_equal(decoded(_load(path, "Q4_K.weight", "exact")), reference)
