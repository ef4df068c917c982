"""The types of :class:`~mlx_gen.settings.GenerationSettings` fields, checked first.

Range checks compare values (``max_tokens >= 0``); before they run, every field must
have its type, so that a value from a JSONL line or a careless caller gives one
``ValueError`` naming the field, never a ``TypeError`` deep in a processor or a
silent surprise: ``2.5`` tokens, ``True`` as a seed, ``1e999`` (JSON's ``inf``) as
``max_tokens``, ``"3"``, a lone int where a list of ids belongs.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from mlx_gen.validation import check_text

#: The largest magnitude an integer setting may take (ids and counts end up in int32
#: arrays; a number this large is a mistake, not a request).
INT_LIMIT = 2**31 - 1
_INT_FIELDS = (
    "max_tokens", "top_k", "begin_suppress_steps", "min_new_tokens", "repetition_context_size",
    "no_repeat_ngram_size", "logprobs", "prefill_step_size", "truncate_prompt",
    "max_thinking_tokens",
)  # fmt: skip
_REAL_FIELDS = (
    "temperature", "top_p", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty",
)  # fmt: skip
_BOOL_FIELDS = ("ignore_eos", "include_stop_str")
_ID_LIST_FIELDS = (
    "allowed_token_ids", "suppress_tokens", "begin_suppress_tokens", "eos_token_ids",
    "extra_eos_token_ids", "logprob_token_ids",
)  # fmt: skip
_NONE_OK = {"allowed_token_ids", "suppress_tokens", "begin_suppress_tokens", "eos_token_ids"}


def check_setting_types(settings: Any) -> None:
    """Refuse settings of the wrong type before any range check compares them.

    * integer fields: ints (not bools), at most :data:`INT_LIMIT` in size; ``seed``
      below ``2**64``;
    * number fields: real numbers, not NaN (an int at most :data:`INT_LIMIT` in size);
    * flags: ``True`` or ``False``;
    * id lists: a list (or tuple) of ints >= 0 (the vocabulary is checked later);
    * ``stop``: strings; ``bad_words``: strings or lists of ids;
    * ``logit_bias``: ``{id: number}``; ``sequence_bias``: ``{(id, ...): number}``;
    * ``logits_processors``, ``stopping_criteria``: callables.

    ``None`` (the model's default) is allowed where the field's default is ``None``.

    Raises:
        ValueError: Naming the field, the value and what is valid.
    """
    for name in (*_INT_FIELDS, "seed"):
        value = getattr(settings, name)
        limit = 2**64 - 1 if name == "seed" else INT_LIMIT
        if value is not None and not _is_int(value, limit):
            _fail(name, value, f"an int, at most {limit}")
    for name in _REAL_FIELDS:
        value = getattr(settings, name)
        if value is not None and not _is_real(value):
            _fail(name, value, "a number")
    for name in _BOOL_FIELDS:
        if not isinstance(getattr(settings, name), bool):
            _fail(name, getattr(settings, name), "True or False")
    for name in _ID_LIST_FIELDS:
        value = getattr(settings, name)
        if not (value is None and name in _NONE_OK) and not _is_ids(value):
            _fail(name, value, "a list of token ids (ints >= 0)")
    _check_collections(settings)


def _check_collections(settings: Any) -> None:
    stop, bad_words = settings.stop, settings.bad_words
    if not isinstance(stop, str) and not (_is_list(stop) and all(isinstance(s, str) for s in stop)):
        _fail("stop", stop, "a list of strings")
    if not _is_list(bad_words) or not all(isinstance(w, str) or _is_ids(w) for w in bad_words):
        _fail("bad_words", bad_words, "a list of strings or of token id lists")
    for word in bad_words:
        if isinstance(word, str):
            check_text(word, "bad_words")
    bias = settings.logit_bias
    if bias is not None and not (
        isinstance(bias, Mapping) and all(_is_int(k) and _is_real(v) for k, v in bias.items())
    ):
        _fail("logit_bias", bias, "a mapping {token id: number}")
    seq = settings.sequence_bias
    if seq is not None and not (
        isinstance(seq, Mapping)
        and all(isinstance(k, tuple) and _is_ids(k) and k and _is_real(v) for k, v in seq.items())
    ):
        _fail("sequence_bias", seq, "a mapping {(token id, ...): number}")
    for name in ("logits_processors", "stopping_criteria"):
        value = getattr(settings, name)
        if not _is_list(value) or not all(callable(f) for f in value):
            _fail(name, value, "a list of callables")


def _fail(name: str, value: Any, expected: str) -> None:
    text = repr(value)
    text = text if len(text) <= 80 else text[:77] + "..."
    raise ValueError(f"{name}={text} is invalid (expected {expected})")


def _is_int(value: Any, limit: int = INT_LIMIT) -> bool:
    return (
        isinstance(value, numbers.Integral)
        and not isinstance(value, bool)
        and (abs(value) <= limit)
    )


def _is_real(value: Any) -> bool:
    if isinstance(value, numbers.Integral):
        return _is_int(value)
    return isinstance(value, numbers.Real) and value == value  # NaN != NaN


def _is_list(value: Any) -> bool:
    """A re-iterable collection (list, tuple, array), not text, a mapping or an iterator."""
    return isinstance(value, Iterable) and not isinstance(value, (str, bytes, Mapping, Iterator))


def _is_ids(value: Any) -> bool:
    return _is_list(value) and all(_is_int(i) and i >= 0 for i in value)
