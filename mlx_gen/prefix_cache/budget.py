"""The prefix cache's default byte budget: a stated fraction of the machine's memory."""

from __future__ import annotations

import os

import mlx.core as mx

DEFAULT_FRACTION = 0.10
"""The default budget is this fraction of memory (the GPU's on Apple silicon, RAM elsewhere)."""

FALLBACK_BYTES = 1 << 30
"""The budget when the memory size cannot be read (1 GiB)."""


def memory_size() -> int | None:
    """Bytes of memory the KV caches live in, or ``None`` when it cannot be read."""
    info = mx.device_info() if hasattr(mx, "device_info") else {}
    size = info.get("memory_size")
    if isinstance(size, int) and size > 0:
        return size
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def default_budget() -> int:
    """:data:`DEFAULT_FRACTION` of :func:`memory_size` (:data:`FALLBACK_BYTES` if unknown)."""
    size = memory_size()
    return FALLBACK_BYTES if size is None else int(size * DEFAULT_FRACTION)


def check_budget(name: str, value: int) -> int:
    """Return ``value`` when it is a byte count >= 0.

    Raises:
        ValueError: ``value`` is not an int >= 0 (``name`` and the value are given).
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name}={value!r} is invalid (expected a number of bytes >= 0)")
    return value


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_bytes(text: str) -> int:
    """``"512M"`` → 536870912: an int with an optional K/M/G/T suffix (powers of 1024).

    Raises:
        ValueError: ``text`` is not such a size (the text and the valid form named).
    """
    raw = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = raw[-1:] if raw[-1:] in _UNITS and raw[-1:] else ""
    number = raw[: len(raw) - len(unit)]
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if not number or value < 0 or value != value:
        raise ValueError(
            f"{text!r} is not a byte size (expected a number >= 0 with an optional "
            "K, M, G or T suffix, e.g. 512M)"
        )
    return int(value * _UNITS[unit])
