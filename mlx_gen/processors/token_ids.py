"""Validated token-id sets shared by the processors, and how a set is banned.

Processors validate their ids once, in the constructor, and precompute what the
per-step work needs: a dense ``(V,)`` mask when ``vocab_size`` is known (one
``mx.where`` per step), otherwise an index array (one scatter per step).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence

import mlx.core as mx


def check_vocab_size(vocab_size: int | None, owner: str) -> int | None:
    """Return ``vocab_size``; raise ``ValueError`` unless it is ``None`` or an int >= 1."""
    if vocab_size is None:
        return None
    if not _is_int(vocab_size) or vocab_size < 1:
        raise ValueError(
            f"{owner}: vocab_size={vocab_size!r} is invalid: expected an int >= 1 or None"
        )
    return int(vocab_size)


def check_token_id(token_id: object, vocab_size: int | None, owner: str) -> int:
    """Return ``token_id`` as an int, or raise ``ValueError`` naming it and the valid range."""
    bad = not _is_int(token_id) or token_id < 0  # type: ignore[operator]
    if bad or (vocab_size is not None and token_id >= vocab_size):  # type: ignore[operator]
        expected = "an int >= 0" if vocab_size is None else f"an int in [0, {vocab_size})"
        size = "" if vocab_size is None else f" (vocab_size={vocab_size})"
        raise ValueError(f"{owner}: token id {token_id!r} is invalid{size}: expected {expected}")
    return int(token_id)  # type: ignore[arg-type]


def token_id_tuple(ids: Iterable[int], vocab_size: int | None, owner: str) -> tuple[int, ...]:
    """Validate ``ids`` and return them deduplicated, first occurrence first."""
    if isinstance(ids, (str, bytes)) or _is_int(ids):
        raise ValueError(f"{owner}: ids={ids!r} is invalid: expected a sequence of token ids")
    checked = (check_token_id(i, vocab_size, owner) for i in ids)
    return tuple(dict.fromkeys(checked))


def token_sequence(seq: Sequence[int], vocab_size: int | None, owner: str) -> tuple[int, ...]:
    """Validate one non-empty token sequence (repeated ids are kept) and return it as a tuple."""
    if isinstance(seq, (str, bytes)) or not isinstance(seq, Sequence) or len(seq) == 0:
        raise ValueError(
            f"{owner}: sequence {seq!r} is invalid: expected a non-empty sequence of token ids"
        )
    return tuple(check_token_id(i, vocab_size, owner) for i in seq)


def check_number(value: object, name: str, owner: str, *, allow_inf: bool = False) -> float:
    """Return ``value`` as a float, or raise ``ValueError`` unless it is a real number (not NaN)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isnan(value)
    if not ok or (not allow_inf and math.isinf(value)):  # type: ignore[arg-type]
        kind = "a number (not NaN)" if allow_inf else "a finite number"
        raise ValueError(f"{owner}: {name}={value!r} is invalid: expected {kind}")
    return float(value)  # type: ignore[arg-type]


class TokenSet:
    """A fixed set of token ids, ready to ban or keep in ``(B, V)`` logits.

    Args:
        ids: Validated token ids (see ``token_id_tuple``); may be empty.
        vocab_size: When given, a dense ``(V,)`` mask is built once, which makes each
            step a single ``mx.where``; otherwise each step scatters into the ids.
    """

    __slots__ = ("ids", "index", "mask")

    def __init__(self, ids: tuple[int, ...], vocab_size: int | None) -> None:
        self.ids = ids
        self.index = mx.array(ids, dtype=mx.int32)
        self.mask: mx.array | None = None
        if vocab_size is not None:
            self.mask = mx.zeros((vocab_size,), dtype=mx.int32).at[self.index].add(1) > 0
        mx.eval(self.index, *([] if self.mask is None else [self.mask]))

    def ban(self, logits: mx.array) -> mx.array:
        """Return ``logits`` with every id of the set at ``-inf``."""
        if not self.ids:
            return logits
        if self.mask is not None:
            return mx.where(self.mask, -mx.inf, logits)
        # minimum (not add) so a +inf logit cannot turn into NaN.
        return logits.at[:, self.index].minimum(-mx.inf)

    def keep_only(self, logits: mx.array) -> mx.array:
        """Return ``logits`` with every id outside the set at ``-inf``."""
        mask = self.mask
        if mask is None:
            mask = mx.zeros((logits.shape[-1],), dtype=mx.int32).at[self.index].add(1) > 0
        return mx.where(mask, logits, -mx.inf)


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
