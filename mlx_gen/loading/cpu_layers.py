"""RMSNorm and RoPE layers compiled for MLX's CPU backend.

``mx.fast.rms_norm`` and ``mx.fast.rope`` are one kernel each on Metal and CUDA, but
the CPU backend has no kernel for them: each call expands into its reference graph,
11 primitives per RMSNorm and 29 per RoPE (positions, frequencies, cos, sin, the
rotation), every decode step. On stories260K that is 410 of the step's 696 primitives,
and on a small model the step's time is mostly the dispatch of primitives (about
2 us each on the x86 machines of ``benchmarks/``).

:func:`compile_cpu_layers` gives every layer of exactly ``nn.RMSNorm`` or ``nn.RoPE``
type a subclass (``__class__`` swap: parameters, attributes and the weight tree are
untouched) that runs the same op under ``mx.compile``, so its element-wise work fuses
into a few kernels; RoPE's offset goes in as an array, so one trace serves every
step. On stories260K a decode step drops from 696 to 449 primitives with logits bit
for bit equal (``tests/test_cpu_layers.py``). Other layer classes (e.g. scaled RoPE
variants, Gemma's norm) are left as they are. May import only mlx.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn


@mx.compile
def _rms_norm(x: mx.array, weight: mx.array, eps: float) -> mx.array:
    return mx.fast.rms_norm(x, weight, eps)


class CompiledRMSNorm(nn.RMSNorm):
    """``nn.RMSNorm`` whose op runs compiled (traced once per input shape)."""

    def __call__(self, x: mx.array) -> mx.array:
        return _rms_norm(x, self["weight"], self.eps)


class CompiledRoPE(nn.RoPE):
    """``nn.RoPE`` whose op runs compiled, with the offset passed as an array."""

    def __call__(self, x: mx.array, offset: Any = 0) -> mx.array:
        fn = self.__dict__.get("_compiled")
        if fn is None:
            dims, traditional, base, scale = self.dims, self.traditional, self.base, self.scale

            def rope(x: mx.array, offset: mx.array) -> mx.array:
                return mx.fast.rope(
                    x, dims, traditional=traditional, base=base, scale=scale, offset=offset
                )

            fn = self.__dict__["_compiled"] = mx.compile(rope)
        if not isinstance(offset, mx.array):
            offset = mx.array(offset, dtype=mx.int32)
        return fn(x, offset)


def compile_cpu_layers(model: nn.Module) -> int:
    """Swap ``model``'s ``nn.RMSNorm`` and ``nn.RoPE`` layers for their compiled forms.

    Only layers of exactly those classes change; outputs are bit for bit the same.

    Args:
        model: A built mlx-lm model.

    Returns:
        How many layers were swapped.

    >>> import mlx.nn as nn
    >>> layer = nn.RMSNorm(4)
    >>> compile_cpu_layers(layer), type(layer).__name__
    (1, 'CompiledRMSNorm')
    """
    swapped = 0
    for _, module in model.named_modules():
        if type(module) is nn.RMSNorm:
            module.__class__ = CompiledRMSNorm
            swapped += 1
        elif type(module) is nn.RoPE:
            module.__class__ = CompiledRoPE
            swapped += 1
    return swapped
