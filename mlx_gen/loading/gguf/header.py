"""The GGUF header, read without ``mx.load``: which ggml type each tensor has.

``mx.load`` silently turns types it has no layout for (Q4_K, ...) into full-size float
arrays, so mlx_gen scans the header first and refuses them by name.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path
from typing import Any

# ggml tensor type names by number ("-": retired); mlx_gen loads those MLX maps losslessly.
GGML_TYPES = (
    "F32 F16 Q4_0 Q4_1 - - Q5_0 Q5_1 Q8_0 Q8_1 Q2_K Q3_K Q4_K Q5_K Q6_K Q8_K IQ2_XXS IQ2_XS "
    "IQ3_XXS IQ1_S IQ4_NL IQ3_S IQ2_S IQ4_XS I8 I16 I32 I64 F64 IQ1_M BF16"
).split()
SUPPORTED_TENSOR_TYPES = ("F32", "F16", "Q4_0", "Q4_1", "Q8_0")

# GGUF metadata value types whose size is fixed (uint8 ... float64); 8 is string, 9 array.
_VALUE_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9


class _HeaderReader:
    """Walks a GGUF header; a read past the end raises ``struct.error``."""

    def __init__(self, buffer: mmap.mmap) -> None:
        self.buffer, self.pos = buffer, 0

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        values = struct.unpack_from(fmt, self.buffer, self.pos)
        self.pos += struct.calcsize(fmt)
        return values

    def string(self) -> bytes:
        (n,) = self.unpack("<Q")
        self.pos += n
        return self.buffer[self.pos - n : self.pos]

    def skip_value(self, value_type: int) -> None:
        if value_type in _VALUE_SIZES:
            self.pos += _VALUE_SIZES[value_type]
        elif value_type == _STRING:
            (n,) = self.unpack("<Q")  # not `self.pos += ...`: that would add to the old pos
            self.pos += n
        elif value_type == _ARRAY:
            elem_type, count = self.unpack("<IQ")
            for _ in range(0 if elem_type in _VALUE_SIZES else count):
                self.skip_value(elem_type)
            self.pos += _VALUE_SIZES.get(elem_type, 0) * count
        else:
            raise struct.error(f"unknown metadata value type {value_type}")


def tensor_types(path: Path) -> dict[str, int]:
    """Map each tensor name in the GGUF file at ``path`` to its ggml type number.

    Raises:
        ValueError: The header is not GGUF or is truncated (the file is named).
    """
    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            reader = _HeaderReader(buf)
            magic, _version, n_tensors, n_values = reader.unpack("<4sIQQ")
            if magic != b"GGUF":
                raise struct.error(f"magic {magic!r} is not b'GGUF'")
            for _ in range(n_values):
                reader.string()
                reader.skip_value(reader.unpack("<I")[0])
            types = {}
            for _ in range(n_tensors):
                name = reader.string().decode("utf-8", "replace")
                (n_dims,) = reader.unpack("<I")
                types[name] = reader.unpack(f"<{n_dims}QIQ")[n_dims]
            return types
    except (struct.error, ValueError, OverflowError) as e:  # mmap of an empty file: ValueError.
        raise ValueError(
            f"{path}: not a readable GGUF file ({e}); it is truncated or corrupt, download it again"
        ) from None


def check_tensor_types(path: Path, types: dict[str, int]) -> None:
    for name, number in types.items():
        type_name = GGML_TYPES[number] if number < len(GGML_TYPES) else f"ggml type {number}"
        if type_name not in SUPPORTED_TENSOR_TYPES:
            raise ValueError(
                f"{path}: tensor {name} has type {type_name}, which mlx_gen does not load; "
                f"supported: {', '.join(SUPPORTED_TENSOR_TYPES)} (re-quantize with "
                "llama.cpp's llama-quantize, e.g. to Q4_0 or Q8_0)"
            )
