"""Checks at the engine's boundary: token ids, the model's context, processor outputs.

Every id that reaches the model (prompts, continuations, batch rows, whatever their
source: ids from the caller, text encoded by the tokenizer, a rendered chat template)
is checked here once, before any work: an id outside ``0..vocab_size - 1`` would read
outside the embedding table (a crash, or garbage for a negative id). A prompt that does
not fit the model's context (``max_position_embeddings``; a GGUF file's context length)
is refused before prefill, naming both lengths.

Each failure is a ``ValueError`` naming the value and what is valid, raised once per
call, never per token (processor outputs are checked on their static shape and dtype,
which needs no evaluation).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import mlx.core as mx


def check_prompt_type(value: Any, what: str = "prompt") -> None:
    """Raise ``ValueError`` unless ``value`` is text or an iterable of token ids.

    >>> check_prompt_type(12345)
    Traceback (most recent call last):
    ...
    ValueError: prompt=12345 is an int: expected text (a str) or a list of token ids
    """
    if isinstance(value, str):
        return
    if (
        value is None
        or isinstance(value, (numbers.Number, Mapping, bytes, bytearray))
        or not isinstance(value, Iterable)
    ):
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        kind = type(value).__name__
        article = "an" if kind[0] in "aeiou" else "a"
        raise ValueError(
            f"{what}={shown} is {article} {kind}: expected text (a str) or a list of token ids"
        )


def token_ids(ids: Iterable[Any], vocab_size: int, *, what: str = "prompt") -> list[int]:
    """``ids`` as a list of ints, each checked against the vocabulary.

    Args:
        ids: Token ids (ints, numpy or MLX integer scalars).
        vocab_size: The number of logits the model produces: valid ids are
            ``0..vocab_size - 1``.
        what: What the ids are, for the message (``"prompt"``, ``"continuation"``).

    Raises:
        ValueError: ``ids`` is not a sequence (``12345``); a non-integer (``2.5``,
            ``True``, ``"3"``) or an id outside the vocabulary; the message names the id,
            its position and the vocabulary size.

    >>> token_ids([1, 2], 512)
    [1, 2]
    >>> token_ids([1, 99999], 512)
    Traceback (most recent call last):
    ...
    ValueError: prompt[1]=99999 is outside the vocabulary (size 512; valid ids: 0..511)
    """
    check_prompt_type(ids, what)
    out = []
    for position, value in enumerate(ids):
        out.append(_token_id(value, position, vocab_size, what))
    return out


def _token_id(value: Any, position: int, vocab_size: int, what: str) -> int:
    if isinstance(value, mx.array) and value.ndim == 0 and mx.issubdtype(value.dtype, mx.integer):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(
            f"{what}[{position}]={value!r} is not a token id (expected an int in "
            f"0..{vocab_size - 1})"
        )
    value = int(value)
    if not 0 <= value < vocab_size:
        raise ValueError(
            f"{what}[{position}]={value} is outside the vocabulary "
            f"(size {vocab_size}; valid ids: 0..{vocab_size - 1})"
        )
    return value


def context_length(config: Mapping[str, Any]) -> int | None:
    """The model's context in tokens: ``max_position_embeddings`` (``text_config`` too).

    GGUF files give theirs as ``{arch}.context_length``, which the loader stores under
    the same key. ``None`` when the config does not say (no check is made then).
    """
    value = config.get("max_position_embeddings")
    if value is None and isinstance(config.get("text_config"), Mapping):
        value = config["text_config"].get("max_position_embeddings")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value


def check_fits(
    length: int, context: int | None, *, what: str = "the prompt", generating: bool = True
) -> None:
    """Refuse ``length`` tokens that do not fit ``context`` (``None``: no limit).

    When ``generating``, a prompt may hold at most ``context - 1`` tokens, so that one
    token can be generated (:func:`room` says how many); otherwise (scoring) the whole
    sequence may fill the context.

    Raises:
        ValueError: Naming both lengths.
    """
    if context is None:
        return
    limit = context - 1 if generating else context
    if length > limit:
        leave = " and leave room to generate" if generating else ""
        raise ValueError(
            f"{what} has {length} tokens, but the model's context is {context} tokens "
            f"(max_position_embeddings): at most {limit} fit{leave}; shorten it"
        )


def truncated(ids: list[int], keep: int | None) -> list[int]:
    """The last ``keep`` of ``ids`` (all of them when ``keep`` is ``None``).

    >>> truncated([1, 2, 3, 4], 2), truncated([1, 2], None)
    ([3, 4], [1, 2])
    """
    return ids if keep is None else ids[-keep:]


def room(prompt_length: int, context: int | None, max_tokens: int) -> int:
    """``max_tokens`` clamped so that prompt + generated tokens fit ``context``.

    Generation that reaches the context's end finishes with ``"length"``, as it does at
    ``max_tokens``.
    """
    if context is None:
        return max_tokens
    return max(0, min(max_tokens, context - prompt_length))


def run_processors(
    processors: Sequence[Callable[..., mx.array]], logits: mx.array, ctx: Any
) -> mx.array:
    """Apply ``processors`` in order, checking each output's shape and dtype.

    Shapes and dtypes are static in MLX, so the check costs no evaluation.

    Raises:
        ValueError: A processor returned something other than a floating ``mx.array``
            of the shape it was given; the message names the processor.
    """
    for processor in processors:
        out = processor(logits, ctx)
        if (
            not isinstance(out, mx.array)
            or out.shape != logits.shape
            or not mx.issubdtype(out.dtype, mx.floating)
        ):
            got = (
                f"shape {out.shape} {out.dtype}"
                if isinstance(out, mx.array)
                else f"a {type(out).__name__}"
            )
            raise ValueError(
                f"logits processor {_name(processor)} returned {got}; expected floating "
                f"logits of shape {logits.shape}, the shape it was given"
            )
        logits = out
    return logits


def _name(processor: Any) -> str:
    name = getattr(processor, "__qualname__", None) or type(processor).__qualname__
    return name if isinstance(name, str) else repr(processor)


def check_count(name: str, value: Any, low: int, high: int | None = None) -> None:
    """Refuse a count argument (``top_n``, ``chunk_size``, ...) that is not an int in range.

    Raises:
        ValueError: ``"{name}={value!r} is invalid (expected an int in low..high)"``.

    >>> check_count("top_n", 2.5, 0, 10)
    Traceback (most recent call last):
    ...
    ValueError: top_n=2.5 is invalid (expected an int in 0..10)
    """
    is_int = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not is_int or value < low or (high is not None and value > high):
        valid = f"an int in {low}..{high}" if high is not None else f"an int >= {low}"
        raise ValueError(f"{name}={value!r} is invalid (expected {valid})")


def check_text(text: str, what: str = "prompt") -> None:
    """Refuse text the tokenizer cannot encode: a lone surrogate (``'\\udcff'``).

    Such characters come from bytes that were not UTF-8 (Python's ``surrogateescape``)
    and make the tokenizer raise a ``TypeError``.

    Raises:
        ValueError: Naming ``what``, the character and its position.

    >>> check_text("fine")
    >>> check_text("ab\\udcff")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: prompt is not valid text: a lone surrogate '\\udcff' at character 2 ...
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(
            f"{what} is not valid text: a lone surrogate {text[e.start]!r} at character "
            f"{e.start} (bytes that were not UTF-8?)"
        ) from None
