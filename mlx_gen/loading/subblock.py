"""Quantized layers with 16-element groups (GGUF's Q6_K and Q2_K), computed exactly.

MLX's ``quantized_matmul`` has no group size 16. Both layers here store the plain affine
layout at group 16 (``weight`` packed as any MLX quantized weight, ``scales``/``biases``
of shape ``(rows, K // 16)``) and compute with group 32 in two passes over the same
codes: the even 16-element halves of each group of 32 with the even scales (the odd
halves of ``x`` zeroed), then the odd halves with the odd scales. The weight values are
exactly the group-16 ones; the sums differ from one dense matmul only in rounding order.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_map_with_path

GROUP_SIZE = 16


def _even_mask(width: int) -> mx.array:
    """True on the first 16 elements of every 32 along an axis of ``width``."""
    return (mx.arange(width) // GROUP_SIZE) % 2 == 0


def _halves(a: mx.array) -> tuple[mx.array, mx.array]:
    """Group-16 scales or biases -> the even and the odd ones, each at group 32."""
    return a[..., 0::2], a[..., 1::2]


class _SubBlock(nn.Module):
    """The shared arrays and the exact dense weight."""

    def __init__(self, rows: int, width: int, bits: int) -> None:
        super().__init__()
        self.group_size, self.bits = GROUP_SIZE, bits
        self.weight = mx.zeros((rows, width * bits // 32), mx.uint32)
        self.scales = mx.zeros((rows, width // GROUP_SIZE))
        self.biases = mx.zeros((rows, width // GROUP_SIZE))

    def _dequantize(self, w: mx.array, scales: mx.array, biases: mx.array) -> mx.array:
        (s0, s1), (b0, b1) = _halves(scales), _halves(biases)
        even = mx.dequantize(w, s0, b0, group_size=32, bits=self.bits)
        odd = mx.dequantize(w, s1, b1, group_size=32, bits=self.bits)
        return mx.where(_even_mask(even.shape[-1]), even, odd)

    def dense_weight(self) -> mx.array:
        """The weight matrix ``(rows, K)``, each element ``scale * q + bias`` of its group."""
        return self._dequantize(self.weight, self.scales, self.biases)

    def _matmul(self, x: mx.array) -> mx.array:
        even_x = mx.where(_even_mask(x.shape[-1]), x, 0)
        (s0, s1), (b0, b1) = _halves(self.scales), _halves(self.biases)
        kwargs: dict[str, Any] = {"transpose": True, "group_size": 32, "bits": self.bits}
        y = mx.quantized_matmul(even_x, self.weight, s0, b0, **kwargs)
        return y + mx.quantized_matmul(x - even_x, self.weight, s1, b1, **kwargs)


class SubBlockLinear(_SubBlock):
    """A linear layer whose weight is affine-quantized in groups of 16.

    >>> layer = SubBlockLinear(64, 8, bias=False, bits=6)
    >>> layer(mx.ones((1, 64))).shape
    (1, 8)
    """

    def __init__(self, input_dims: int, output_dims: int, *, bias: bool, bits: int) -> None:
        super().__init__(output_dims, input_dims, bits)
        if bias:
            self.bias = mx.zeros((output_dims,))

    def __call__(self, x: mx.array) -> mx.array:
        y = self._matmul(x)
        return y + self.bias if "bias" in self else y


class SubBlockEmbedding(_SubBlock):
    """An embedding affine-quantized in groups of 16; ``as_linear`` for tied outputs.

    >>> SubBlockEmbedding(10, 32, bits=6)(mx.array([[1, 2]])).shape
    (1, 2, 32)
    """

    def __init__(self, num_embeddings: int, dims: int, *, bits: int) -> None:
        super().__init__(num_embeddings, dims, bits)

    def __call__(self, x: mx.array) -> mx.array:
        return self._dequantize(self.weight[x], self.scales[x], self.biases[x])

    def as_linear(self, x: mx.array) -> mx.array:
        """``x @ weight.T``, as a tied output layer."""
        return self._matmul(x)


def _subblock_layer(module: nn.Module, bits: int) -> nn.Module:
    rows, width = module.weight.shape
    if isinstance(module, nn.Embedding):
        return SubBlockEmbedding(rows, width, bits=bits)
    return SubBlockLinear(width, rows, bias="bias" in module, bits=bits)


def replace_subblock_layers(model: nn.Module, quantization: dict[str, Any]) -> set[str]:
    """Swap in :class:`SubBlockLinear`/:class:`SubBlockEmbedding` for every linear or
    embedding layer whose entry in ``quantization`` (a config's per-layer map) has group
    size 16.

    Returns:
        The module paths replaced.
    """
    replaced = set()

    def swap(path: str, module: nn.Module) -> nn.Module:
        entry = quantization.get(path)
        if not isinstance(entry, dict) or entry.get("group_size") != GROUP_SIZE:
            return module
        if not isinstance(module, (nn.Linear, nn.Embedding)):
            return module
        replaced.add(path)
        return _subblock_layer(module, entry["bits"])

    leaves = tree_map_with_path(swap, model.leaf_modules(), is_leaf=nn.Module.is_module)
    model.update_modules(leaves)
    return replaced
