"""Additive biases: per token id (``LogitBias``) and per token sequence (``SequenceBias``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import mlx.core as mx

from mlx_gen.processors.context import ProcessorContext
from mlx_gen.processors.token_ids import (
    TokenSet,
    check_number,
    check_token_id,
    check_vocab_size,
    token_sequence,
)


@dataclass(frozen=True)
class LogitBias:
    """Add ``bias[id]`` to the logit of each listed id (OpenAI's ``logit_bias``, unclamped).

    ``-inf`` bans a token. ``+inf`` forces one: when any bias is ``+inf`` the output
    is ``0.0`` at every ``+inf`` id and ``-inf`` everywhere else, whatever the input
    (so argmax and sampling pick a forced id, several forced ids are equally
    likely, and no ``inf - inf`` NaN reaches the softmax: the forced token has
    probability 1).

    Args:
        bias: Token id to the number added to its logit (finite or +-inf, not NaN).
        vocab_size: Optional vocabulary size: checks the ids and precomputes a dense
            ``(V,)`` bias, so each step is one add (otherwise one scatter-add).

    Raises:
        ValueError: An id is not an int, is negative, or is ``>= vocab_size``; or a
            bias is not a number or is NaN.

    >>> import mlx.core as mx
    >>> from mlx_gen.processors import LogitBias, ProcessorContext
    >>> ctx = ProcessorContext(mx.array([1]), mx.array([], dtype=mx.int32), step=0)
    >>> LogitBias({1: 2.5, 3: -mx.inf}, vocab_size=4)(mx.ones((1, 4)), ctx).tolist()
    [[1.0, 3.5, 1.0, -inf]]
    >>> LogitBias({2: mx.inf})(mx.ones((1, 4)), ctx).tolist()
    [[-inf, -inf, 0.0, -inf]]
    """

    bias: Mapping[int, float]
    vocab_size: int | None = None
    _forced: TokenSet | None = field(init=False, repr=False, compare=False)
    _index: mx.array = field(init=False, repr=False, compare=False)
    _values: mx.array = field(init=False, repr=False, compare=False)
    _dense: mx.array | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        vocab_size = check_vocab_size(self.vocab_size, "LogitBias")
        if not isinstance(self.bias, Mapping):
            raise ValueError(
                f"LogitBias: bias={self.bias!r} is invalid: expected a {{id: bias}} mapping"
            )
        bias = {
            check_token_id(i, vocab_size, "LogitBias"): check_number(
                b, f"bias[{i}]", "LogitBias", allow_inf=True
            )
            for i, b in self.bias.items()
        }
        forced = tuple(i for i, b in bias.items() if b == math.inf)
        index = mx.array(list(bias), dtype=mx.int32)
        values = mx.array(list(bias.values()), dtype=mx.float32)
        dense = None
        if vocab_size is not None and not forced:
            dense = mx.zeros((vocab_size,), dtype=mx.float32).at[index].add(values)
            mx.eval(dense)
        mx.eval(index, values)
        object.__setattr__(self, "bias", bias)
        object.__setattr__(self, "_forced", TokenSet(forced, vocab_size) if forced else None)
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "_dense", dense)

    def __call__(self, logits: mx.array, ctx: ProcessorContext) -> mx.array:
        if self._forced is not None:
            return self._forced.keep_only(mx.zeros_like(logits))
        if not self.bias:
            return logits
        if self._dense is not None:
            dense = (
                self._dense
                if self._dense.dtype == logits.dtype
                else self._dense.astype(logits.dtype)
            )
            return logits + dense
        return logits.at[:, self._index].add(self._values.astype(logits.dtype))


@dataclass(frozen=True)
class SequenceBias:
    """Bias the last token of each sequence when the context ends with the rest of it.

    transformers' ``sequence_bias``: a 1-token sequence ``(t,)`` adds its bias to
    ``t`` at every step; a longer one ``(*prefix, t)`` adds it to ``t`` only when
    the last ``len(prefix)`` tokens of ``ctx.context_ids`` (prompt + generated)
    equal ``prefix``. Biases of sequences ending in the same token add up. One
    difference: transformers skips a sequence longer than the whole context, so a
    context equal to the prefix does not match there; here it does.

    Args:
        bias: Token-id tuple to the number added (finite or ``-inf``; use
            ``LogitBias`` to force a token with ``+inf``).
        vocab_size: Optional vocabulary size: checks the ids and precomputes the
            dense bias of the 1-token sequences.

    Raises:
        ValueError: A sequence is empty or holds a bad id, or a bias is NaN or ``+inf``.

    >>> import mlx.core as mx
    >>> from mlx_gen.processors import ProcessorContext, SequenceBias
    >>> bias = SequenceBias({(1, 2): -mx.inf, (3,): 1.0})
    >>> ctx = ProcessorContext(mx.array([0, 1]), mx.array([], dtype=mx.int32), step=0)
    >>> bias(mx.zeros((1, 4)), ctx).tolist()
    [[0.0, 0.0, -inf, 1.0]]
    """

    bias: Mapping[tuple[int, ...], float]
    vocab_size: int | None = None
    _single: LogitBias = field(init=False, repr=False, compare=False)
    _prefixes: mx.array = field(init=False, repr=False, compare=False)
    _wildcard: mx.array = field(init=False, repr=False, compare=False)
    _last: mx.array = field(init=False, repr=False, compare=False)
    _values: mx.array = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        vocab_size = check_vocab_size(self.vocab_size, "SequenceBias")
        bias = _check_sequence_bias(self.bias, vocab_size)
        multi = [(seq, b) for seq, b in bias.items() if len(seq) > 1]
        width = max((len(seq) - 1 for seq, _ in multi), default=0)
        # Prefixes right-aligned in a (S, width) matrix; unused left cells match anything.
        prefixes = [[-1] * (width - len(s) + 1) + list(s[:-1]) for s, _ in multi]
        wildcard = [[True] * (width - len(s) + 1) + [False] * (len(s) - 1) for s, _ in multi]
        arrays = {
            "_prefixes": mx.array(prefixes, dtype=mx.int32).reshape(len(multi), width),
            "_wildcard": mx.array(wildcard, dtype=mx.bool_).reshape(len(multi), width),
            "_last": mx.array([s[-1] for s, _ in multi], dtype=mx.int32),
            "_values": mx.array([b for _, b in multi], dtype=mx.float32),
        }
        mx.eval(*arrays.values())
        single = {seq[0]: b for seq, b in bias.items() if len(seq) == 1}
        object.__setattr__(self, "bias", bias)
        object.__setattr__(self, "_single", LogitBias(single, vocab_size))
        for name, value in arrays.items():
            object.__setattr__(self, name, value)

    def __call__(self, logits: mx.array, ctx: ProcessorContext) -> mx.array:
        out = self._single(logits, ctx)
        n_seq, width = self._prefixes.shape
        if n_seq == 0:
            return out
        ids = ctx.context_ids.astype(mx.int32)
        if ids.shape[0] >= width:
            tail = ids[ids.shape[0] - width :]
        else:  # -1 never equals a token id, so a too-short context cannot match
            tail = mx.concatenate([mx.full((width - ids.shape[0],), -1, mx.int32), ids])
        match = mx.all((self._prefixes == tail) | self._wildcard, axis=-1)  # (S,)
        update = mx.where(match, self._values, 0.0).astype(out.dtype)
        return out.at[:, self._last].add(update)


def _check_sequence_bias(
    bias: Mapping[tuple[int, ...], float], vocab_size: int | None
) -> dict[tuple[int, ...], float]:
    if not isinstance(bias, Mapping):
        raise ValueError(
            f"SequenceBias: bias={bias!r} is invalid: expected a {{(ids...): bias}} mapping"
        )
    checked: dict[tuple[int, ...], float] = {}
    for seq, value in bias.items():
        ids = token_sequence(seq, vocab_size, "SequenceBias")
        number = check_number(value, f"bias[{seq!r}]", "SequenceBias", allow_inf=True)
        if number == math.inf:
            raise ValueError(
                f"SequenceBias: bias[{seq!r}]=inf is invalid: expected a finite number or -inf "
                "(force a single token with LogitBias)"
            )
        checked[ids] = number
    return checked
