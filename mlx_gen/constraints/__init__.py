"""Structured output: constraints (JSON Schema, regex, Lark grammars, choices) via llguidance.

``spec`` holds the public constructors, ``compiled`` the (constraint, tokenizer) cache,
``matcher`` the per-call grammar state on the host, ``mask`` the MLX op that applies a
token bitmask to logits. May import only mlx, numpy and llguidance (no other mlx_gen package).
"""

from mlx_gen.constraints.compiled import CompiledConstraint, compile_constraint
from mlx_gen.constraints.mask import apply_token_bitmask
from mlx_gen.constraints.matcher import Matcher, fill_masks
from mlx_gen.constraints.spec import (
    DEFAULT_JSON_WHITESPACE,
    Choice,
    Constraint,
    Grammar,
    JsonObject,
    JsonSchema,
    Regex,
)

__all__ = [
    "DEFAULT_JSON_WHITESPACE",
    "Choice",
    "CompiledConstraint",
    "Constraint",
    "Grammar",
    "JsonObject",
    "JsonSchema",
    "Matcher",
    "Regex",
    "apply_token_bitmask",
    "compile_constraint",
    "fill_masks",
]
