"""The compiled step tail for a batch whose rows share one configuration.

When every row has equal processors (each with a built-in fused form, see
:mod:`mlx_gen.processors.fused`), sampling parameters and logprob request, the whole
``(B, V)`` tail (processors → filters → draw → report) is one compiled call, traced
once per batch size, over the rows' stacked state: each row keeps its own step,
counts and key chain, so its tokens and reports are bit for bit what the per-row
path of :mod:`mlx_gen.batch.step` gives. Anything else returns ``None`` here and
takes that per-row path.

A :class:`Group` lives while the batch keeps the same rows; when rows leave or join,
the next step regroups them, taking each row's state and key from its old group (or
building them from its prompt, ``row.generated`` and ``row.key``).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

import mlx.core as mx

from mlx_gen.no_allowed_token import feedable
from mlx_gen.plan import DecodePlan
from mlx_gen.processors.fused import FusedForm, State, advance, builtin_form, initial_state
from mlx_gen.step_tail import sample_and_report


class Group:
    """Rows decoded under one compiled tail: their stacked state and key chains.

    Attributes:
        rows: The rows, in batch order.
        state: The fused state, one row per row.
        keys: ``(B, 2)`` keys (sampling) or ``None`` (greedy).

    While a row is grouped, ``row.generated`` is not extended every step (its state
    holds what the processors read); the group keeps each step's tokens and gives the
    row its ids back when it leaves (:func:`release`).
    """

    def __init__(
        self,
        rows: Sequence[Any],
        state: State,
        keys: mx.array | None,
        fn: Callable,
        bases: list[mx.array],
    ) -> None:
        self.rows, self.state, self.keys, self._fn = tuple(rows), state, keys, fn
        self._bases, self._tokens = bases, []

    def step(self, logits: mx.array) -> tuple[mx.array, mx.array | None]:
        """Build one step (lazily): ``(tokens (B,), packed (B * modes, width) or None)``."""
        tokens, self.state, self.keys, packed = self._fn(logits, self.state, self.keys)
        self._tokens.append(tokens)
        return tokens, packed

    def key_of(self, row: Any) -> mx.array:
        """``row``'s current key (its chain as the per-row path would hold it)."""
        return self.keys[self.rows.index(row)]

    def generated_of(self, row: Any) -> mx.array:
        """``row``'s generated ids: those it joined with, then every step's token."""
        i = self.rows.index(row)
        return mx.concatenate([self._bases[i], *(t[i : i + 1] for t in self._tokens)])


_groups: weakref.WeakKeyDictionary[Any, Group] = weakref.WeakKeyDictionary()
_compiled: list[tuple[tuple[Any, ...], Callable]] = []  # (signature, compiled tail)


def _forms(plan: DecodePlan) -> tuple[FusedForm, ...] | None:
    forms = tuple(builtin_form(p) for p in plan.processors)
    return None if any(f is None for f in forms) else forms  # type: ignore[return-value]


def _signature(plan: DecodePlan) -> tuple[Any, ...]:
    return (plan.processors, plan.sampling, plan.logprobs)


def _tail_fn(plan: DecodePlan, forms: tuple[FusedForm, ...]) -> Callable:
    sampling, logprobs = plan.sampling, plan.logprobs

    def fn(
        logits: mx.array, state: State, keys: mx.array | None
    ) -> tuple[mx.array, State, mx.array | None, mx.array | None]:
        processed = logits
        for form in forms:
            processed = form.apply(processed, state)
        row_keys = [] if keys is None else [keys[i] for i in range(keys.shape[0])]
        tokens, row_keys, packed = sample_and_report(
            processed, logits, row_keys, sampling, logprobs
        )
        return (
            tokens,
            advance(state, feedable(tokens)),
            (mx.stack(row_keys) if row_keys else None),
            packed,
        )

    return mx.compile(fn)


def group_for(rows: Sequence[Any], vocab_size: int) -> Group | None:
    """The group that runs ``rows``' tail in one compiled call, or ``None`` (per-row path).

    Rows must share one configuration (compared once per membership change, not
    per step) whose processors all have fused forms. Rows leaving a group for the
    per-row path get their key chains back (:func:`release`).
    """
    current = _groups.get(rows[0])
    if current is not None and current.rows == tuple(rows):
        return current
    plan = rows[0].plan
    forms = _forms(plan)
    if forms is None or any(_signature(r.plan) != _signature(plan) for r in rows[1:]):
        release(rows)
        return None
    keys = None if plan.sampling.greedy else mx.stack([_key(r) for r in rows])
    old = [_groups.get(r) for r in rows]
    fresh = [(r.prompt, r.generated) for r, g in zip(rows, old, strict=True) if g is None]
    state = _stack_state(rows, old, initial_state(forms, fresh, vocab_size) if fresh else None)
    bases = [
        r.generated if g is None else g.generated_of(r) for r, g in zip(rows, old, strict=True)
    ]
    group = Group(rows, state, keys, _compiled_for(plan, forms), bases)
    for r in rows:
        _groups[r] = group
    return group


def _stack_state(rows: Sequence[Any], old: list[Group | None], fresh: State | None) -> State:
    """Each row's state row, from its old group or from ``fresh`` (new rows, in order)."""
    pieces: list[State] = []
    n_fresh = 0
    for r, g in zip(rows, old, strict=True):
        if g is None:
            assert fresh is not None
            pieces.append({name: v[n_fresh : n_fresh + 1] for name, v in fresh.items()})
            n_fresh += 1
        else:
            i = g.rows.index(r)
            pieces.append({name: v[i : i + 1] for name, v in g.state.items()})
    return {name: mx.concatenate([p[name] for p in pieces]) for name in pieces[0]}


def _key(row: Any) -> mx.array:
    group = _groups.get(row)
    return row.key if group is None else group.key_of(row)


def _compiled_for(plan: DecodePlan, forms: tuple[FusedForm, ...]) -> Callable:
    """One compiled function per configuration (traced again only for a new batch size)."""
    signature = _signature(plan)
    for known, fn in _compiled:
        if known == signature:
            return fn
    fn = _tail_fn(plan, forms)
    del _compiled[:-15]  # keep the 16 most recent configurations
    _compiled.append((signature, fn))
    return fn


def release(rows: Sequence[Any]) -> None:
    """Hand ``rows`` back to the per-row path: ``row.key`` and ``row.generated`` catch up."""
    for r in rows:
        group = _groups.pop(r, None)
        if group is not None:
            r.generated = group.generated_of(r)
            if group.keys is not None:
                r.key = group.key_of(r)


def grouped(row: Any) -> bool:
    """Whether ``row`` is in a group (then its ``generated`` is kept by the group)."""
    return row in _groups
