"""Check an architecture config against the weights found, before any model is built.

A ``config.json`` is data from whoever made the folder: ``num_hidden_layers: 1000000``
would build a million layers, ``num_attention_heads: 0`` divides by zero inside
mlx-lm, ``hidden_size: 2**40`` overflows MLX. :func:`check_config` refuses such values
with one ``ValueError`` naming the file, the key, the value and the valid range, which
is bounded by the weights themselves: a model dimension cannot exceed the largest
tensor, and the config cannot describe more layers than the weights hold.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping
from typing import Any

# Keys every Llama-family config may carry; each is a count or a dimension (an int >= 1).
DIMENSION_KEYS = (
    "hidden_size",
    "intermediate_size",
    "head_dim",
    "vocab_size",
    "num_attention_heads",
    "num_key_value_heads",
)
# RoPE needs no tensor per position, so only MLX's int32 range bounds this one.
MAX_POSITIONS = 2**31 - 1
# The first integer component of a tensor name is its layer: "model.layers.3.mlp...".
_LAYER_INDEX = re.compile(r"\.(\d+)(?:\.|$)")


def layer_indices(names: Any) -> set[int]:
    """The layer indices in tensor names (the first ``.N.`` component of each).

    >>> sorted(layer_indices(["model.layers.0.mlp.up.weight", "model.layers.1.a.experts.7.w"]))
    [0, 1]
    """
    found = set()
    for name in names:
        match = _LAYER_INDEX.search(name)
        if match:
            found.add(int(match.group(1)))
    return found


def _positive_int(config: Mapping[str, Any], key: str, high: int, why: str, where: str) -> None:
    value = config.get(key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise ValueError(
            f"{where}: {key}={value!r} is invalid (expected an int in [1, {high}]{why})"
        )


def _check_quantization(config: Mapping[str, Any], where: str) -> None:
    quantization = config.get("quantization")
    if quantization is None:
        return
    if not isinstance(quantization, Mapping):
        raise ValueError(
            f"{where}: quantization={quantization!r} is invalid (expected an object with "
            '"bits" and "group_size")'
        )
    for key, high in (("bits", 8), ("group_size", 1024)):
        _positive_int(quantization, key, high, "", f"{where} quantization")


def check_config(config: Mapping[str, Any], weights: Mapping[str, Any], *, source: str) -> None:
    """Refuse config values that are malformed or that the weights cannot back.

    Args:
        config: The parsed ``config.json`` (``text_config`` is checked too).
        weights: Tensor name -> array (only names and shapes are read; nothing is loaded).
        source: How to name the config in errors (its path).

    Raises:
        ValueError: A count or dimension that is not an int >= 1, exceeds the largest
            tensor's size, or describes more layers than the weights hold; a malformed
            ``quantization`` (the key, value and valid range are named).
    """
    largest = max((math.prod(v.shape) for v in weights.values()), default=0)
    if largest < 1:
        raise ValueError(f"{source}: the weights hold no tensor with any element")
    layers = layer_indices(weights)
    parts = [(source, config)]
    if isinstance(config.get("text_config"), Mapping):
        parts.append((f"{source} text_config", config["text_config"]))
    for where, part in parts:
        for key in DIMENSION_KEYS:
            why = f"; no weight tensor has more than {largest} elements"
            _positive_int(part, key, largest, why, where)
        why = f"; the weights hold {len(layers)} layer(s)"
        _positive_int(part, "num_hidden_layers", max(len(layers), 1), why, where)
        _positive_int(part, "max_position_embeddings", MAX_POSITIONS, "", where)
    _check_quantization(config, source)


def _matches(value: Any, hint: Any) -> bool:
    """Whether a JSON ``value`` fits a ``ModelArgs`` annotation (containers: outer type only)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is bool:  # JSON 0/1 works as a flag in Python; accept it.
        return isinstance(value, bool) or value in (0, 1)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if hint is type(None):
        return value is None
    if origin is not None and isinstance(origin, type) and issubclass(origin, (dict, list, tuple)):
        return isinstance(value, dict if issubclass(origin, dict) else (list, tuple))
    return True  # Any, or an annotation this check does not know: mlx-lm decides.


def _hint_name(hint: Any) -> str:
    names = {bool: "true/false", int: "an int", float: "a finite number", str: "a string"}
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return " or ".join(_hint_name(a) for a in args)
    origin = typing.get_origin(hint) or hint
    if isinstance(origin, type) and issubclass(origin, dict):
        return "an object"
    if isinstance(origin, type) and issubclass(origin, (list, tuple)):
        return "a list"
    return names.get(hint, str(hint))


def check_types(config: Mapping[str, Any], args_class: type, *, source: str) -> None:
    """Refuse a config value whose JSON type does not fit mlx-lm's ``ModelArgs`` field.

    ``null`` is always let through (mlx-lm treats most as "use the default").

    Raises:
        ValueError: ``rope_theta: "x"``, ``rms_norm_eps: []``, ... (key, value and the
            expected type named).
    """
    if not dataclasses.is_dataclass(args_class):
        return
    hints = typing.get_type_hints(args_class)
    for f in dataclasses.fields(args_class):
        value = config.get(f.name)
        if value is not None and f.name in hints and not _matches(value, hints[f.name]):
            raise ValueError(
                f"{source}: {f.name}={value!r} is invalid (expected {_hint_name(hints[f.name])})"
            )
