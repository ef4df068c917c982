"""``load()``'s options as command-line flags, shared by ``mlx-gen`` and ``mlx-gen-server``.

``--dtype``, ``--gguf-precision`` and ``--dequantize`` are defined once here, so both
commands spell, document and pass them to :func:`~mlx_gen.loading.loader.load` the same
way (on the CPU backend, ``--dequantize`` turns a 4-bit model's first token from seconds
into a fraction of a second, at the cost of float32 memory).
"""

from __future__ import annotations

import argparse
from typing import Any

from mlx_gen.loading.architecture import DTYPES
from mlx_gen.loading.gguf.tensors import PRECISIONS as GGUF_PRECISIONS


def add_load_flags(group: Any) -> None:
    """Add ``--dtype``, ``--gguf-precision`` and ``--dequantize`` to a parser or group.

    >>> p = argparse.ArgumentParser(); add_load_flags(p)
    >>> load_options(p.parse_args(["--dtype", "float16", "--dequantize"]))
    {'dtype': 'float16', 'gguf_precision': 'exact', 'dequantize': True}
    """
    group.add_argument(
        "--dtype", choices=list(DTYPES), help="cast floating weights (default: as stored)"
    )
    group.add_argument(
        "--gguf-precision",
        choices=GGUF_PRECISIONS,
        default="exact",
        help="GGUF: exact keeps every weight as llama.cpp decodes it (float32 scales); "
        "compact uses float16 scales and 8-bit Q6_K (default: exact)",
    )
    group.add_argument(
        "--dequantize",
        action="store_true",
        help="replace quantized layers by float32 ones (faster on CPU, more memory)",
    )


def load_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of ``load()`` that :func:`add_load_flags`' flags set."""
    return {
        "dtype": args.dtype,
        "gguf_precision": args.gguf_precision,
        "dequantize": args.dequantize,
    }
