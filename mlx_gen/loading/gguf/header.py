"""The GGUF header: metadata and tensor table, read without ``mx.load``.

``mx.load`` dequantizes Q4_K wrongly and aborts on other types without naming the
tensor; ``gguf.GGUFReader`` recurses into nested metadata arrays (a crafted file
overflows Python's stack) and builds three numpy arrays per vocabulary entry (11 s for
Gemma 3's 262,144 tokens on this machine). This reader walks the header once with
``struct`` against the file size, so a corrupt or hostile file gives one ``ValueError``
naming the file. Layout (``gguf.h``): magic, version, counts; key, value type, value per
metadata entry; name, dims (innermost first), ggml type, offset per tensor; alignment
padding; the tensor data.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

# GGUF metadata value types: number -> numpy dtype; 8 is string, 9 array.
_NUMPY = {
    0: np.uint8,
    1: np.int8,
    2: np.uint16,
    3: np.int16,
    4: np.uint32,
    5: np.int32,
    6: np.float32,
    7: np.bool_,
    10: np.uint64,
    11: np.int64,
    12: np.float64,
}
_STRING, _ARRAY = 8, 9
MAX_ARRAY_DEPTH = 4  # llama.cpp writes flat arrays; deeper nesting is refused, not recursed.
MAX_DIMS = 4


class _Corrupt(Exception):
    """Raised inside the walk; :func:`read_header` turns it into ``ValueError``."""


@dataclass(frozen=True)
class TensorInfo:
    """One tensor-table entry.

    Attributes:
        name: The GGUF name (``blk.0.attn_q.weight``).
        shape: numpy order, outermost first (GGUF lists the innermost first).
        ggml_type: The type's name (``"Q4_K"``), or ``"type N"`` for an unknown number.
        offset: Absolute byte offset of the data in the file.
        nbytes: Bytes of data.
    """

    name: str
    shape: tuple[int, ...]
    ggml_type: str
    offset: int
    nbytes: int


@dataclass(frozen=True)
class Header:
    """What :func:`read_header` returns: plain-Python metadata and the tensor table."""

    metadata: dict[str, Any]
    tensors: list[TensorInfo]


class _Walker:
    """Reads values from ``buffer``; every read is checked against its size."""

    def __init__(self, buffer: mmap.mmap) -> None:
        self.buffer, self.pos, self.size = buffer, 0, len(buffer)

    def take(self, n: int) -> int:
        if n < 0 or self.pos + n > self.size:
            raise _Corrupt(f"a value at byte {self.pos} runs past the end of the file")
        self.pos += n
        return self.pos - n

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        return struct.unpack_from(fmt, self.buffer, self.take(struct.calcsize(fmt)))

    def string(self, what: str) -> str:
        (n,) = self.unpack("<Q")
        start = self.take(n)
        try:
            return self.buffer[start : start + n].decode("utf-8")
        except UnicodeDecodeError as e:
            raise _Corrupt(
                f"{what} is not valid UTF-8 ({e.reason} at byte {start + e.start})"
            ) from None

    def value(self, value_type: int, key: str, depth: int = 0) -> Any:
        if value_type in _NUMPY:
            dtype = np.dtype(_NUMPY[value_type]).newbyteorder("<")
            return np.frombuffer(self.buffer, dtype, 1, self.take(dtype.itemsize))[0].item()
        if value_type == _STRING:
            return self.string(f"metadata {key}")
        if value_type != _ARRAY:
            raise _Corrupt(f"metadata {key} has unknown value type {value_type}")
        elem, count = self.unpack("<IQ")
        if elem in _NUMPY:
            dtype = np.dtype(_NUMPY[elem]).newbyteorder("<")
            start = self.take(dtype.itemsize * count)
            return np.frombuffer(self.buffer, dtype, count, start).tolist()
        if depth >= MAX_ARRAY_DEPTH and elem == _ARRAY:
            raise _Corrupt(f"metadata {key} nests arrays deeper than {MAX_ARRAY_DEPTH} levels")
        if count > self.size - self.pos:  # Every element takes at least one byte.
            raise _Corrupt(f"metadata {key} claims {count} elements, more than the file holds")
        return [self.value(elem, key, depth + 1) for _ in range(count)]


def _tensor_info(walker: _Walker) -> tuple[str, tuple[int, ...], str, int, int]:
    name = walker.string("a tensor name")
    (n_dims,) = walker.unpack("<I")
    if not 1 <= n_dims <= MAX_DIMS:
        raise _Corrupt(f"tensor {name} has {n_dims} dimensions (1 to {MAX_DIMS} are valid)")
    *dims, type_number, offset = walker.unpack(f"<{n_dims}QIQ")
    try:
        kind = GGMLQuantizationType(type_number)
    except ValueError:
        return name, tuple(dims[::-1]), f"type {type_number}", offset, 0
    block, size = GGML_QUANT_SIZES[kind]
    n = int(np.prod(dims, dtype=object))
    if dims[0] % block:
        raise _Corrupt(f"tensor {name}: row width {dims[0]} is not a multiple of {block}")
    return name, tuple(dims[::-1]), kind.name, offset, n // block * size


def _walk(walker: _Walker) -> Header:
    magic, version, n_tensors, n_values = walker.unpack("<4sIQQ")
    if magic != b"GGUF":
        raise _Corrupt(f"magic {magic!r} is not b'GGUF'")
    if version not in (2, 3):
        raise _Corrupt(f"GGUF version {version} is not supported (2 and 3 are)")
    metadata: dict[str, Any] = {}
    for _ in range(min(n_values, walker.size)):
        key = walker.string("a metadata key")
        metadata[key] = walker.value(walker.unpack("<I")[0], key)
    entries = [_tensor_info(walker) for _ in range(min(n_tensors, walker.size))]
    alignment = metadata.get("general.alignment", 32)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise _Corrupt(f"general.alignment={alignment!r} is not a power of two")
    data_start = walker.pos + -walker.pos % alignment
    tensors = []
    for name, shape, kind, offset, nbytes in entries:
        if data_start + offset + nbytes > walker.size:
            raise _Corrupt(f"tensor {name} runs past the end of the file")
        tensors.append(TensorInfo(name, shape, kind, data_start + offset, nbytes))
    if len({t.name for t in tensors}) != len(tensors):
        raise _Corrupt("two tensors have the same name")
    return Header(metadata, tensors)


def read_header(path: Path) -> Header:
    """Read the metadata and tensor table of the GGUF file at ``path``.

    Returns:
        The :class:`Header`; metadata values as Python data (numbers, strings, lists).

    Raises:
        ValueError: The file is not GGUF, is truncated, or its header is inconsistent
            (the file and the fault are named).
    """
    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _walk(_Walker(buf))
    except (_Corrupt, struct.error, ValueError, OverflowError, MemoryError) as e:
        # mmap of an empty file raises ValueError; a huge count, OverflowError/MemoryError.
        raise ValueError(
            f"{path}: not a readable GGUF file ({e}); it is truncated or corrupt, download it again"
        ) from None
