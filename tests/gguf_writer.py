"""A minimal GGUF v3 writer for tests: metadata, F32/F16 tensors and Q8_0/Q4_0/Q4_1 blocks.

Layout (llama.cpp ``gguf.h``): magic ``GGUF``, version, tensor count, metadata count;
each metadata entry as key, value type, value; each tensor as name, dims (innermost
first), ggml type, data offset; padding to ``ALIGNMENT``; then the tensor data, each
tensor starting on an aligned offset.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ALIGNMENT = 32
BLOCK = 32  # Elements per Q8_0/Q4_0/Q4_1 block.

# GGUF metadata value types.
UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64 = 4, 5, 6, 7, 8, 9, 10
# ggml tensor types.
GGML_TYPES = {
    "F32": 0,
    "F16": 1,
    "Q4_0": 2,
    "Q4_1": 3,
    "Q8_0": 8,
    "Q4_K": 12,
    "IQ2_XXS": 16,
    "BF16": 30,
}


@dataclass(frozen=True)
class Tensor:
    """Raw tensor data as GGUF stores it; ``shape`` is in numpy order (outermost first)."""

    ggml_type: str
    shape: tuple[int, ...]
    data: bytes


@dataclass(frozen=True)
class Typed:
    """A metadata value with an explicit GGUF type (e.g. ``Typed(UINT64, 5)``)."""

    value_type: int
    value: Any


def _string(s: str) -> bytes:
    raw = s.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


_SCALAR_FORMATS = {UINT32: "<I", INT32: "<i", FLOAT32: "<f", BOOL: "<?", UINT64: "<Q"}


def _infer_type(value: Any) -> int:
    if isinstance(value, Typed):
        return value.value_type
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int):
        return UINT32 if value >= 0 else INT32
    if isinstance(value, float):
        return FLOAT32
    if isinstance(value, str):
        return STRING
    if isinstance(value, (list, tuple)):
        return ARRAY
    raise TypeError(f"no GGUF type for {value!r}")


def _value(value_type: int, value: Any) -> bytes:
    if isinstance(value, Typed):
        value = value.value
    if value_type == STRING:
        return _string(value)
    if value_type != ARRAY:
        return struct.pack(_SCALAR_FORMATS[value_type], value)
    # Arrays of int are written as INT32, of float as FLOAT32 (what llama.cpp writes).
    first = value[0] if value else ""
    elem = STRING if isinstance(first, str) else FLOAT32 if isinstance(first, float) else INT32
    body = b"".join(_value(elem, v) for v in value)
    return struct.pack("<IQ", elem, len(value)) + body


def write_gguf(path: Path, metadata: Mapping[str, Any], tensors: Mapping[str, Tensor]) -> None:
    """Write a GGUF v3 file with ``metadata`` and ``tensors`` (in the given order)."""
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata)))
    for key, value in metadata.items():
        value_type = _infer_type(value)
        out += _string(key) + struct.pack("<I", value_type) + _value(value_type, value)
    offset = 0
    for name, t in tensors.items():
        dims = t.shape[::-1]  # GGUF lists the innermost dimension first.
        out += _string(name) + struct.pack(
            f"<I{len(dims)}QIQ", len(dims), *dims, GGML_TYPES[t.ggml_type], offset
        )
        offset += -(-len(t.data) // ALIGNMENT) * ALIGNMENT
    out += bytes(-len(out) % ALIGNMENT)
    for t in tensors.values():
        out += t.data + bytes(-len(t.data) % ALIGNMENT)
    Path(path).write_bytes(bytes(out))


def float_tensor(x: np.ndarray, ggml_type: str = "F32") -> Tensor:
    """An F32 or F16 tensor."""
    dtype = {"F32": np.float32, "F16": np.float16}[ggml_type]
    return Tensor(ggml_type, x.shape, np.ascontiguousarray(x, dtype=dtype).tobytes())


def _blocks(x: np.ndarray) -> np.ndarray:
    assert x.shape[-1] % BLOCK == 0, x.shape
    return x.astype(np.float32).reshape(-1, BLOCK)  # (n_blocks, 32)


def _f16(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16)[:, None]


def _nibbles(q: np.ndarray) -> np.ndarray:
    # Byte j of a block holds element j (low nibble) and element j + 16 (high nibble).
    return (q[:, :16] | (q[:, 16:] << 4)).astype(np.uint8)


def quantize(x: np.ndarray, ggml_type: str) -> tuple[Tensor, np.ndarray]:
    """Quantize ``x`` (last axis a multiple of 32) as llama.cpp does.

    Returns:
        The tensor and its exact dequantized value (float32, shape of ``x``).
    """
    b = _blocks(x)
    if ggml_type == "Q8_0":
        d = _f16(np.abs(b).max(1) / 127)
        q = np.round(b / np.where(d == 0, 1, d).astype(np.float32)).astype(np.int8)
        raw = np.concatenate([d.view(np.uint8), q.view(np.uint8)], 1)
        deq = d.astype(np.float32) * q
    elif ggml_type == "Q4_0":
        signed_max = b[np.arange(len(b)), np.abs(b).argmax(1)]
        d = _f16(signed_max / -8)
        inv = 1 / np.where(d == 0, 1, d).astype(np.float32)
        q = np.clip(np.round(b * inv + 8), 0, 15).astype(np.uint8)
        raw = np.concatenate([d.view(np.uint8), _nibbles(q)], 1)
        deq = d.astype(np.float32) * (q.astype(np.float32) - 8)
    elif ggml_type == "Q4_1":
        lo, hi = b.min(1), b.max(1)
        d, m = _f16((hi - lo) / 15), _f16(lo)
        inv = 1 / np.where(d == 0, 1, d).astype(np.float32)
        q = np.clip(np.round((b - m.astype(np.float32)) * inv), 0, 15).astype(np.uint8)
        raw = np.concatenate([d.view(np.uint8), m.view(np.uint8), _nibbles(q)], 1)
        deq = d.astype(np.float32) * q + m.astype(np.float32)
    else:
        raise ValueError(f"cannot quantize to {ggml_type}")
    return Tensor(ggml_type, x.shape, raw.tobytes()), deq.reshape(x.shape)


def permute_for_gguf(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order: each head's rotate-half pairs become adjacent rows."""
    # (n_head * head_dim, ...) -> (n_head, 2, head_dim // 2, ...) -> swap the middle axes.
    rest = w.shape[1:]
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *rest).swapaxes(1, 2).reshape(w.shape)
