"""The generation settings a checkpoint carries, resolved once into a typed value.

Precedence (documented in README "Semantics"):

* ``eos_token_ids`` is the **union**, order kept and duplicates dropped, of
  ``config.json`` ``eos_token_id`` (int or list), then ``generation_config.json``
  ``eos_token_id`` (int or list), then the tokenizer's EOS id. Neither file replaces
  the other, and id ``0`` is a valid id.
* Every other field comes from ``generation_config.json``; ``bos_token_id`` and
  ``pad_token_id`` fall back to ``config.json`` and then the tokenizer.
* Values the caller passes (``overrides``) win over file values.
* Unknown keys are ignored; a malformed value raises ``ValueError`` naming the file,
  the key and the value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

# Sources of an EOS id, in union order.
CONFIG_JSON = "config.json"
GENERATION_CONFIG_JSON = "generation_config.json"
TOKENIZER = "tokenizer"


@dataclass(frozen=True)
class GenerationConfig:
    """A checkpoint's generation settings, merged from its files.

    Attributes:
        eos_token_ids: Every id that ends generation, in union order (see module doc).
        eos_sources: For each EOS id, the sources that named it (``"config.json"``,
            ``"generation_config.json"``, ``"tokenizer"``, ``"caller"``).
        bos_token_id: The id put before a prompt, or ``None``.
        pad_token_id: The padding id, or ``None``.
        do_sample: ``False`` means greedy decoding unless the caller sets a temperature.
        temperature: Softmax temperature for sampling.
        top_k: Keep the ``k`` most likely tokens; ``0`` turns the filter off.
        top_p: Nucleus mass in (0, 1]; ``1.0`` turns the filter off.
        min_p: Drop tokens below ``min_p`` times the top probability; ``0.0`` is off.
        repetition_penalty: HF repetition penalty (``1.0`` is off).
        max_new_tokens: Default number of tokens to generate, or ``None``.
        min_new_tokens: Generate at least this many tokens before any EOS may win.
        suppress_tokens: Ids banned at every step.
        begin_suppress_tokens: Ids banned at the first generated position(s).
        bad_words_ids: Token sequences that may never be generated.
        no_repeat_ngram_size: Ban repeating any n-gram of this size (``0`` is off).
    """

    eos_token_ids: tuple[int, ...] = ()
    eos_sources: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    bos_token_id: int | None = None
    pad_token_id: int | None = None
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    max_new_tokens: int | None = None
    min_new_tokens: int = 0
    suppress_tokens: tuple[int, ...] = ()
    begin_suppress_tokens: tuple[int, ...] = ()
    bad_words_ids: tuple[tuple[int, ...], ...] = ()
    no_repeat_ngram_size: int = 0

    def to_json_dict(self) -> dict[str, Any]:
        """Return the settings as a ``generation_config.json`` dictionary.

        Loading a folder with this file (and a ``config.json`` without
        ``eos_token_id``) gives back an equal ``GenerationConfig``.
        """
        out: dict[str, Any] = {"eos_token_id": list(self.eos_token_ids)}
        for f in fields(self):
            if f.name in ("eos_token_ids", "eos_sources"):
                continue
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, tuple):
                value = [list(v) if isinstance(v, tuple) else v for v in value]
            out[f.name] = value
        return out


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object from ``path``; a bad file (not JSON, not UTF-8, nested too deeply
    for Python's parser) raises ``ValueError`` naming it."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    except RecursionError:
        raise ValueError(f"{path}: not valid JSON (nested too deeply)") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _id(value: Any, *, where: str, key: str, vocab_size: int | None) -> int:
    """Validate one token id (bools and floats are rejected: JSON ``true`` is not an id)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where}: {key}={value!r} is not a token id (expected an int >= 0)")
    if value < 0 or (vocab_size is not None and value >= vocab_size):
        valid = f"0..{vocab_size - 1}" if vocab_size is not None else ">= 0"
        raise ValueError(f"{where}: {key}={value!r} is out of range (valid ids: {valid})")
    return value


def _ids(value: Any, *, where: str, key: str, vocab_size: int | None) -> tuple[int, ...]:
    """Validate an id or a list of ids; ``None`` gives ``()``."""
    if value is None:
        return ()
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    return tuple(_id(v, where=where, key=key, vocab_size=vocab_size) for v in items)


def _number(value: Any, *, where: str, key: str, low: float, high: float, kind: type) -> Any:
    ok_type = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        ok_type = isinstance(value, int) and not isinstance(value, bool)
    if not ok_type or not (low <= value <= high) or (kind is float and not math.isfinite(value)):
        kind_name = "an int" if kind is int else "a finite number"
        raise ValueError(
            f"{where}: {key}={value!r} is invalid (expected {kind_name} in [{low}, {high}])"
        )
    return kind(value)


_INF = float("inf")
# key -> (type, low, high) for the scalar sampling settings of generation_config.json.
_SCALARS: dict[str, tuple[type, float, float]] = {
    "temperature": (float, 0.0, _INF),
    "top_k": (int, 0, _INF),
    "top_p": (float, 0.0, 1.0),
    "min_p": (float, 0.0, 1.0),
    "repetition_penalty": (float, 0.0, _INF),
    "max_new_tokens": (int, 0, _INF),
    "min_new_tokens": (int, 0, _INF),
    "no_repeat_ngram_size": (int, 0, _INF),
}

# Ends of the ranges above that sampling refuses: (key, value, the valid range).
_EXCLUDED = (
    ("top_p", 0.0, "(0, 1]"),
    ("min_p", 1.0, "[0, 1)"),
    ("repetition_penalty", 0.0, "(0, inf)"),
)


def _settings(gen: Mapping[str, Any], *, where: str, vocab_size: int | None) -> dict[str, Any]:
    """Validate the non-EOS keys of a ``generation_config.json`` dictionary."""
    out: dict[str, Any] = {}
    for key, (kind, low, high) in _SCALARS.items():
        if gen.get(key) is not None:
            out[key] = _number(gen[key], where=where, key=key, low=low, high=high, kind=kind)
    for key, bad, valid in _EXCLUDED:
        if out.get(key) == bad:
            raise ValueError(
                f"{where}: {key}={gen[key]!r} is invalid (expected a number in {valid})"
            )
    if gen.get("do_sample") is not None:
        if not isinstance(gen["do_sample"], bool):
            raise ValueError(
                f"{where}: do_sample={gen['do_sample']!r} is invalid (expected true/false)"
            )
        out["do_sample"] = gen["do_sample"]
    for key in ("suppress_tokens", "begin_suppress_tokens"):
        if gen.get(key) is not None:
            out[key] = _ids(gen[key], where=where, key=key, vocab_size=vocab_size)
    if gen.get("bad_words_ids") is not None:
        words = gen["bad_words_ids"]
        if not isinstance(words, (list, tuple)) or not all(
            isinstance(w, (list, tuple)) and w for w in words
        ):
            raise ValueError(
                f"{where}: bad_words_ids={words!r} is invalid (expected a list of id lists)"
            )
        out["bad_words_ids"] = tuple(
            _ids(w, where=where, key="bad_words_ids", vocab_size=vocab_size) for w in words
        )
    return out


def resolve_generation_config(
    *,
    config: Mapping[str, Any],
    generation_config: Mapping[str, Any] | None,
    tokenizer_eos_token_id: int | None,
    tokenizer_bos_token_id: int | None = None,
    vocab_size: int | None,
    overrides: Mapping[str, Any] | None = None,
    config_name: str = CONFIG_JSON,
    generation_config_name: str = GENERATION_CONFIG_JSON,
) -> GenerationConfig:
    """Merge a checkpoint's settings into one :class:`GenerationConfig`.

    Args:
        config: The parsed ``config.json``.
        generation_config: The parsed ``generation_config.json``, or ``None`` if absent.
        tokenizer_eos_token_id: The tokenizer's EOS id, or ``None``.
        tokenizer_bos_token_id: The tokenizer's BOS id, used when neither file has one.
        vocab_size: Ids must be below this (``None`` skips the upper check).
        overrides: Caller values (``GenerationConfig`` field names) that win over files.
            ``eos_token_ids`` given here replaces the union.
        config_name: How to name ``config.json`` in errors (e.g. its full path).
        generation_config_name: How to name ``generation_config.json`` in errors.

    Returns:
        The resolved settings.

    Raises:
        ValueError: A malformed value; the message names the file, key and value.
    """
    gen = generation_config or {}
    sources: dict[int, list[str]] = {}
    named = [
        (config.get("eos_token_id"), config_name, CONFIG_JSON),
        (gen.get("eos_token_id"), generation_config_name, GENERATION_CONFIG_JSON),
    ]
    for value, where, label in named:
        for i in _ids(value, where=where, key="eos_token_id", vocab_size=vocab_size):
            sources.setdefault(i, []).append(label)
    if tokenizer_eos_token_id is not None:
        sources.setdefault(tokenizer_eos_token_id, []).append(TOKENIZER)

    def first_id(key: str, fallback: int | None) -> int | None:
        for value, where in (
            (gen.get(key), generation_config_name),
            (config.get(key), config_name),
        ):
            ids = _ids(value, where=where, key=key, vocab_size=vocab_size)
            if ids:
                return ids[0]
        return fallback

    resolved = GenerationConfig(
        eos_token_ids=tuple(sources),
        eos_sources={i: tuple(s) for i, s in sources.items()},
        bos_token_id=first_id("bos_token_id", tokenizer_bos_token_id),
        pad_token_id=first_id("pad_token_id", None),
        **_settings(gen, where=generation_config_name, vocab_size=vocab_size),
    )
    return apply_overrides(resolved, overrides or {}, vocab_size=vocab_size)


def apply_overrides(
    base: GenerationConfig, overrides: Mapping[str, Any], *, vocab_size: int | None
) -> GenerationConfig:
    """Return ``base`` with caller values applied (validated like file values).

    Raises:
        ValueError: An unknown field name or a malformed value.
    """
    known = {f.name for f in fields(GenerationConfig)} - {"eos_sources"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown generation setting(s) {unknown}; valid: {sorted(known)}")
    where = "caller"
    values = _settings(overrides, where=where, vocab_size=vocab_size)
    for key in ("bos_token_id", "pad_token_id"):
        if key in overrides:
            values[key] = (
                None
                if overrides[key] is None
                else _id(overrides[key], where=where, key=key, vocab_size=vocab_size)
            )
    if "eos_token_ids" in overrides:
        eos = _ids(
            list(overrides["eos_token_ids"]),
            where=where,
            key="eos_token_ids",
            vocab_size=vocab_size,
        )
        values["eos_token_ids"] = tuple(dict.fromkeys(eos))
        values["eos_sources"] = {i: ("caller",) for i in values["eos_token_ids"]}
    return replace(base, **values)
