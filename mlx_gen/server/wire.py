"""What rank 0 tells the other ranks each step, as data: the wire format of the lockstep server.

Every change to the batch (a job admitted with its prompt ids, settings and seed; a job
cancelled; the stop) becomes one *op*, a JSON list, and a step's ops travel as one UTF-8
JSON document (:mod:`mlx_gen.server.lockstep` sends it over ``mx.distributed``). Settings
are rebuilt on the other ranks **from data only**, never by unpickling: scalars, strings,
lists, maps and a constraint's grammar text (``response_format`` schemas and tool
grammars are llguidance grammars, so they travel as text and compile to the same mask;
a :class:`~mlx_gen.drafters.PromptLookup` drafter travels as its fields). What is not
data (custom ``logits_processors``, ``stopping_criteria``, a
:class:`~mlx_gen.drafters.DraftModel`) cannot run on another rank and is refused by
name (:class:`NotData`).

>>> from mlx_gen.settings import GenerationSettings
>>> s = GenerationSettings(seed=7, logit_bias={3: -1.5}, stop=("\\n",))
>>> decode_settings(json.loads(json.dumps(encode_settings(s)))) == s
True
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from mlx_gen.constraints import Constraint
from mlx_gen.drafters import DraftModel, PromptLookup
from mlx_gen.settings import GenerationSettings

__all__ = ["NotData", "decode_ops", "decode_settings", "encode_ops", "encode_settings"]


class NotData(ValueError):
    """A setting that is code, not data, so it cannot be rebuilt on another rank."""


def _encode(value: Any, name: str) -> Any:
    """``value`` as JSON-ready data with tags for what JSON lacks (tuples, int keys)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Constraint):
        return {"constraint": [value.grammar, value.description]}
    if isinstance(value, PromptLookup):  # its fields are ints and a bool
        return {"prompt_lookup": dataclasses.asdict(value)}
    if isinstance(value, DraftModel):
        raise NotData(
            f"{name}=DraftModel(...) cannot run on the other ranks of a distributed server "
            "(each rank would run its own draft model; not supported yet); draft with "
            "PromptLookup(...) or serve from one process"
        )
    if isinstance(value, Mapping):
        return {"map": [[_encode(k, name), _encode(v, name)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        tag = "list" if isinstance(value, list) else "seq"
        return {tag: [_encode(v, name) for v in value]}
    raise NotData(
        f"{name}={value!r} cannot run on the other ranks of a distributed server (only "
        "data travels between ranks: numbers, strings, token ids, grammars); leave it out "
        "or serve from one process"
    )


def _decode(value: Any) -> Any:
    """The inverse of :func:`_encode` (a list comes back a list, a tuple a tuple)."""
    if not isinstance(value, dict):
        return value
    ((tag, body),) = value.items()
    if tag == "constraint":
        return Constraint(*body)
    if tag == "prompt_lookup":
        return PromptLookup(**body)
    if tag == "map":
        return {_decode(k): _decode(v) for k, v in body}
    if tag == "seq":
        return tuple(_decode(v) for v in body)
    if tag == "list":
        return [_decode(v) for v in body]
    expected = "constraint, prompt_lookup, map, seq or list"
    raise ValueError(f"unknown wire tag {tag!r} (expected {expected})")


def encode_settings(settings: GenerationSettings) -> dict[str, Any]:
    """``settings`` as data: only the fields that differ from the defaults.

    Raises:
        NotData: A field holds code (``logits_processors``, ``stopping_criteria``) or an
            object that is not data (a ``speculative`` draft model); the message names it.
    """
    out = {}
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if value != field.default or field.default is dataclasses.MISSING:
            out[field.name] = _encode(value, field.name)
    return out


def decode_settings(data: Mapping[str, Any]) -> GenerationSettings:
    """The settings :func:`encode_settings` wrote (validated again by the dataclass)."""
    return GenerationSettings(**{name: _decode(value) for name, value in data.items()})


def encode_ops(ops: list[list[Any]]) -> bytes:
    """One step's ops as UTF-8 JSON (``[]`` when nothing changes)."""
    return json.dumps(ops, separators=(",", ":")).encode()


def decode_ops(payload: bytes) -> list[list[Any]]:
    """The ops of :func:`encode_ops` (empty bytes: no ops)."""
    return json.loads(payload.decode()) if payload else []
