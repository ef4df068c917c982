"""Replace a built model's quantized layers with dense float32 ones.

MLX's CPU backend runs quantized matmuls several times slower than float32 ones through
BLAS, so ``load(..., dequantize=True)`` trades memory (4 bytes per weight) for speed.
Every weight keeps the value the quantized layer computes with (``scales * q + biases``).
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_map_with_path

from mlx_gen.loading.subblock import SubBlockEmbedding, SubBlockLinear

_QUANTIZED = (nn.QuantizedLinear, nn.QuantizedEmbedding, SubBlockLinear, SubBlockEmbedding)


def dense_weight(module: nn.Module) -> mx.array:
    """The float32 weight matrix a quantized linear or embedding layer computes with."""
    if isinstance(module, (SubBlockLinear, SubBlockEmbedding)):
        return module.dense_weight().astype(mx.float32)
    w = mx.dequantize(
        module.weight,
        module.scales,
        module.get("biases"),
        group_size=module.group_size,
        bits=module.bits,
        mode=getattr(module, "mode", "affine"),
    )
    return w.astype(mx.float32)


def _dense(module: nn.Module) -> nn.Module:
    weight = dense_weight(module)
    if isinstance(module, (nn.QuantizedEmbedding, SubBlockEmbedding)):
        layer = nn.Embedding(*weight.shape)
        layer.weight = weight
        return layer
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias="bias" in module)
    layer.weight = weight
    if "bias" in module:
        layer.bias = module.bias
    return layer


def dequantize_layers(model: nn.Module) -> int:
    """Replace every quantized linear/embedding layer of ``model`` with a float32 one.

    Returns:
        How many layers were replaced (0 for a dense model).
    """
    count = 0

    def swap(_path: str, module: nn.Module) -> nn.Module:
        nonlocal count
        if not isinstance(module, _QUANTIZED):
            return module
        count += 1
        return _dense(module)

    leaves = tree_map_with_path(swap, model.leaf_modules(), is_leaf=nn.Module.is_module)
    model.update_modules(leaves)
    mx.eval(model.parameters())
    return count
