"""GGUF tensor data → MLX arrays: float tensors as they are, quantized ones packed into
MLX's affine layout (``weight``/``scales``/``biases``) straight from the ggml codes.

Two precisions (:data:`PRECISIONS`):

* ``"exact"`` (default): float32 scales and biases, so ``mx.dequantize`` gives every
  weight bit for bit as llama.cpp (``gguf.quants.dequantize``) decodes it; Q6_K and
  Q2_K keep their 16-element groups (see :mod:`mlx_gen.loading.subblock`).
* ``"compact"``: float16 scales and biases (scales round, and ``mx.dequantize`` yields
  float16: about 1e-3 of the largest weight), and Q6_K re-quantized to 8 bits in groups
  of 64 (about 1e-2); Q2_K keeps its 16-element groups, which take less memory. The
  reader keeps the token embedding exact (see :func:`~mlx_gen.loading.gguf.reader.read_weights`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np

from mlx_gen.loading.gguf.header import TensorInfo
from mlx_gen.loading.gguf.quants import UNPACKERS, Codes, pack_bits

PRECISIONS = ("exact", "compact")
FLOAT_TYPES = ("F32", "F16", "BF16")
SUPPORTED_TYPES = (*FLOAT_TYPES, *UNPACKERS)
_ROWS_PER_CHUNK = 4096  # Bounds the numpy temporaries while unpacking a large matrix.


@dataclass(frozen=True)
class Loaded:
    """One tensor as MLX arrays.

    Attributes:
        arrays: ``{"weight": ...}``, plus ``"scales"``/``"biases"`` when quantized.
        bits: Bits per code, ``None`` when dense.
        group_size: Elements per scale, ``None`` when dense.
    """

    arrays: dict[str, mx.array]
    bits: int | None = None
    group_size: int | None = None


def check_type(info: TensorInfo, path: Path) -> None:
    """Raise ``ValueError`` naming the tensor when its type is not in :data:`SUPPORTED_TYPES`."""
    if info.ggml_type not in SUPPORTED_TYPES:
        raise ValueError(
            f"{path}: tensor {info.name} has type {info.ggml_type}, which mlx_gen does not "
            f"load; supported: {', '.join(SUPPORTED_TYPES)} (re-quantize with llama.cpp's "
            "llama-quantize, e.g. to Q4_K_M)"
        )


def unpack_codes(raw: np.ndarray, shape: tuple[int, ...], ggml_type: str) -> Codes:
    """The affine codes of a quantized tensor's raw bytes, one row per output row."""
    unpacker = UNPACKERS[ggml_type]
    width = shape[-1]
    rows = int(np.prod(shape[:-1], dtype=np.int64))
    blocks = raw.reshape(rows * (width // unpacker.block_size), unpacker.type_size)
    step = _ROWS_PER_CHUNK * (width // unpacker.block_size)
    parts = [unpacker.unpack(np.asarray(blocks[i : i + step])) for i in range(0, len(blocks), step)]
    q, scales, biases = (np.concatenate([p[i] for p in parts]) for i in range(3))
    return Codes(
        q.reshape(rows, width),
        scales.reshape(rows, width // unpacker.group_size),
        biases.reshape(rows, width // unpacker.group_size),
        unpacker.bits,
        unpacker.group_size,
    )


def dense(codes: Codes) -> np.ndarray:
    """``scales * q + biases`` in float32, as the quantized layer computes it."""
    rows, width = codes.q.shape
    groups = codes.q.reshape(rows, -1, codes.group_size).astype(np.float32)
    return (codes.scales[..., None] * groups + codes.biases[..., None]).reshape(rows, width)


def _float(raw: np.ndarray, info: TensorInfo) -> mx.array:
    if info.ggml_type == "BF16":  # numpy has no bfloat16: MLX reinterprets the bits.
        return mx.array(raw.view(np.uint16).reshape(info.shape)).view(mx.bfloat16)
    dtype = np.float32 if info.ggml_type == "F32" else np.float16
    return mx.array(raw.view(dtype).reshape(info.shape))


def _quantized(codes: Codes, shape: tuple[int, ...], precision: str) -> Loaded:
    if precision == "compact" and codes.group_size == 16 and codes.bits == 6:
        # Q6_K: 8-bit groups of 64 (8.5 bits/weight, one matmul instead of the two-pass
        # form's two). Q2_K stays at group 16: 4 bits/weight with float16 scales.
        w, s, b = mx.quantize(mx.array(dense(codes)), group_size=64, bits=8)
        half = {"weight": w, "scales": s.astype(mx.float16), "biases": b.astype(mx.float16)}
        return Loaded(half, 8, 64)
    dtype = np.float16 if precision == "compact" else np.float32
    lead = shape[:-1]
    arrays = {
        "weight": mx.array(pack_bits(codes.q, codes.bits).reshape(*lead, -1)),
        "scales": mx.array(codes.scales.astype(dtype).reshape(*lead, -1)),
        "biases": mx.array(codes.biases.astype(dtype).reshape(*lead, -1)),
    }
    return Loaded(arrays, codes.bits, codes.group_size)


def load_tensor(data: np.ndarray, info: TensorInfo, precision: str) -> Loaded:
    """Read one tensor from the memory-mapped file ``data`` (uint8).

    Quantized matrices become MLX affine layers' arrays; a quantized tensor of another
    rank (rare: a norm vector) is decoded to float32.
    """
    raw = data[info.offset : info.offset + info.nbytes]
    if info.ggml_type in FLOAT_TYPES:
        return Loaded({"weight": _float(raw, info)})
    codes = unpack_codes(raw, info.shape, info.ggml_type)
    if len(info.shape) != 2:
        return Loaded({"weight": mx.array(dense(codes).reshape(info.shape))})
    return _quantized(codes, info.shape, precision)
