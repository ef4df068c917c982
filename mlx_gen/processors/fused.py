"""Processors over fixed-shape state arrays, so that a decode step compiles once.

A processor's ``__call__`` branches on ``ctx.step`` (a Python int) and reads the
growing ``ctx.generated_ids``: under ``mx.compile`` every new step would be a new
trace. A *fused form* is the same computation written over state arrays whose
shapes never change during a call (``B`` rows, vocabulary ``V``):

* ``step``: ``(B,)`` int32, the index of the token about to be generated;
* ``context_counts``: ``(B, V)`` int32, occurrences of each id in prompt + generated;
* ``generated_counts``: ``(B, V)`` int32, occurrences in the generated ids only;
* ``tail``: ``(B, W)`` int32, the last ``W`` context ids, left-padded with ``-1``.

:func:`initial_state` builds the state from a prompt; :func:`advance` folds each
sampled token in (inside the compiled step). Forms are exact: each gives bit for bit
what its processor gives (``tests/test_fused.py`` compares them on random contexts).

Which processors have a form is decided, never guessed: the built-ins listed in
``_FORMS`` (by exact type, so a subclass that overrides ``__call__`` is not taken for
its base); a custom processor gets one from :func:`probe` only when tracing it under
``mx.compile`` with a context that refuses ``step``, ``generated_ids`` and
``context_ids`` succeeds. Everything else is called as a processor, every step.
Imports only mlx and this package.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import mlx.core as mx

from mlx_gen.processors.allowed import AllowedTokenIds
from mlx_gen.processors.bad_words import BadWords
from mlx_gen.processors.bias import LogitBias, SequenceBias
from mlx_gen.processors.context import LogitsProcessor, ProcessorContext
from mlx_gen.processors.penalties import PresencePenalty, RepetitionPenalty
from mlx_gen.processors.suppress import BeginSuppressTokens, MinNewTokens, SuppressTokens

State = dict[str, mx.array]
"""Fused state: ``step``, ``context_counts``, ``generated_counts``, ``tail``, each if needed."""


@dataclass(frozen=True)
class FusedForm:
    """One processor as a function of ``(logits (B, V), state) -> logits``.

    Attributes:
        apply: The computation; pure, lazy, traced once per call.
        needs: The state fields it reads (``"step"``, ``"context_counts"``,
            ``"generated_counts"``).
        tail: How many trailing context ids it reads from ``state["tail"]``.
    """

    apply: Callable[[mx.array, State], mx.array]
    needs: frozenset[str] = frozenset()
    tail: int = 0


def _static(p: Any) -> FusedForm:
    # Reads no context at all: the processor itself is its fused form.
    return FusedForm(lambda logits, state: p(logits, None))


def _until(limit: int, p: Any) -> FusedForm:
    def apply(logits: mx.array, state: State) -> mx.array:
        active = (state["step"] < limit)[:, None]
        return mx.where(active, p._tokens.ban(logits), logits)

    return FusedForm(apply, frozenset({"step"}))


def _presence(ids: mx.array, vocab: int) -> mx.array:
    """``(B, W)`` ids (``-1`` = none) to a ``(B, V)`` mask of the ids present."""
    index = mx.where(ids < 0, vocab, ids)
    marks = mx.zeros((ids.shape[0], vocab + 1), dtype=mx.bool_)
    return mx.put_along_axis(marks, index, mx.array(True), axis=-1)[:, :vocab]


def _repetition(p: RepetitionPenalty) -> FusedForm:
    size = p.context_size

    def apply(logits: mx.array, state: State) -> mx.array:
        if size is None:
            seen = state["context_counts"] > 0
        else:
            tail = state["tail"]
            seen = _presence(tail[:, tail.shape[1] - size :], logits.shape[-1])
        scaled = mx.where(logits < 0, logits * p.penalty, logits / p.penalty)
        return mx.where(seen, scaled, logits)

    if size is None:
        return FusedForm(apply, frozenset({"context_counts"}))
    return FusedForm(apply, tail=size)


def _presence_penalty(p: PresencePenalty) -> FusedForm:
    def apply(logits: mx.array, state: State) -> mx.array:
        return mx.where(state["generated_counts"] > 0, logits - p.penalty, logits)

    return FusedForm(apply, frozenset({"generated_counts"}))


def _sequence_bias(p: SequenceBias) -> FusedForm:
    n_seq, width = p._prefixes.shape

    def apply(logits: mx.array, state: State) -> mx.array:
        out = p._single(logits, None)
        if n_seq == 0:
            return out
        tail = state["tail"]
        tail = tail[:, tail.shape[1] - width :].astype(mx.int32)  # (B, width)
        match = mx.all((p._prefixes[None] == tail[:, None, :]) | p._wildcard[None], axis=-1)
        update = mx.where(match, p._values, 0.0).astype(out.dtype)  # (B, S)
        return out.at[:, p._last].add(update)

    return FusedForm(apply, tail=width if n_seq else 0)


_FORMS: dict[type, Callable[[Any], FusedForm]] = {
    AllowedTokenIds: _static,
    SuppressTokens: _static,
    LogitBias: _static,
    BeginSuppressTokens: lambda p: _until(p.steps, p),
    MinNewTokens: lambda p: _until(p.min_new_tokens, p),
    RepetitionPenalty: _repetition,
    PresencePenalty: _presence_penalty,
    SequenceBias: _sequence_bias,
    BadWords: lambda p: _sequence_bias(p._bias),
}


def builtin_form(processor: object) -> FusedForm | None:
    """The fused form of a built-in processor (exact type), or ``None``.

    ``FrequencyPenalty`` and ``NoRepeatNGram`` have none: the first's floats depend on
    its scatter-add order over the history, the second reads the whole history.

    >>> from mlx_gen.processors import FrequencyPenalty, SuppressTokens
    >>> builtin_form(SuppressTokens([1], vocab_size=4)) is not None
    True
    >>> builtin_form(FrequencyPenalty(0.5)) is None
    True
    """
    builder = _FORMS.get(type(processor))
    return None if builder is None else builder(processor)


class _PromptOnlyContext(ProcessorContext):
    """A context whose per-step fields raise: reading them marks a processor as step-bound."""

    def __getattribute__(self, name: str) -> Any:
        if name in ("step", "generated_ids", "context_ids"):
            raise _StepBound(name)
        return super().__getattribute__(name)


class _StepBound(Exception):
    pass


def probe(processor: LogitsProcessor, prompt_ids: mx.array, vocab_size: int) -> FusedForm | None:
    """A fused form for a custom processor when it provably needs no per-step input.

    The processor is traced once under ``mx.compile`` on ``(1, V)`` zeros with a
    context whose ``step``, ``generated_ids`` and ``context_ids`` raise. If the trace
    succeeds (no such read, no host read, a ``(1, V)`` array out), its output is a
    function of the logits and the prompt only, and the form calls it with that
    context. A processor can opt out with an attribute ``compilable = False``
    (e.g. one that keeps Python state between calls, which the contract forbids).

    Args:
        processor: Any ``processor(logits, ctx)``.
        prompt_ids: The call's prompt, ``(P,)`` int32.
        vocab_size: ``V``.

    Returns:
        The form, or ``None``: call the processor as usual.

    >>> import mlx.core as mx
    >>> prompt = mx.array([1, 2])
    >>> probe(lambda logits, ctx: logits * 2, prompt, 4) is not None
    True
    >>> probe(lambda logits, ctx: logits - ctx.step, prompt, 4) is None
    True
    """
    if getattr(processor, "compilable", True) is False:
        return None
    empty = mx.zeros((0,), dtype=mx.int32)
    ctx = _PromptOnlyContext(prompt_ids, empty, 0)

    def apply(logits: mx.array, state: State) -> mx.array:
        return processor(logits, ctx)

    try:
        out = mx.compile(lambda logits: processor(logits, ctx))(mx.zeros((1, vocab_size)))
    except Exception:  # noqa: BLE001 - any failure to trace means: call it eagerly
        return None
    if (
        not isinstance(out, mx.array)
        or out.shape != (1, vocab_size)
        or not mx.issubdtype(out.dtype, mx.floating)
    ):
        return None  # called eagerly, where a wrong output is named (validation.py)
    return FusedForm(apply)


def initial_state(
    forms: Sequence[FusedForm],
    contexts: Sequence[tuple[mx.array, mx.array]],
    vocab_size: int,
) -> State:
    """The state before the next step, one row per ``(prompt_ids, generated_ids)`` pair.

    Only the fields some form needs are built; ``step`` is ``len(generated_ids)``.
    With no form, the state is empty.
    """
    needs = set().union(*(f.needs for f in forms))
    width = max((f.tail for f in forms), default=0)
    rows: dict[str, list[mx.array]] = {}
    for prompt, generated in contexts:
        context = mx.concatenate([prompt, generated]).astype(mx.int32)
        row = {}
        if "step" in needs:
            row["step"] = mx.array([generated.shape[0]], dtype=mx.int32)
        if "context_counts" in needs:
            row["context_counts"] = _counts(context, vocab_size)
        if "generated_counts" in needs:
            row["generated_counts"] = _counts(generated.astype(mx.int32), vocab_size)
        if width:
            tail = context[max(0, context.shape[0] - width) :]
            pad = mx.full((width - tail.shape[0],), -1, dtype=mx.int32)
            row["tail"] = mx.concatenate([pad, tail])[None]
        for name, value in row.items():
            rows.setdefault(name, []).append(value)
    state = {name: mx.concatenate(values) for name, values in rows.items()}
    mx.eval(state)
    return state


def _counts(ids: mx.array, vocab_size: int) -> mx.array:
    return mx.zeros((1, vocab_size), dtype=mx.int32).at[0, ids].add(1)


def advance(state: State, tokens: mx.array) -> State:
    """Fold the sampled ``tokens`` ``(B,)`` into ``state``: the state of the next step."""
    rows = mx.arange(tokens.shape[0])
    out = {"step": state["step"] + 1} if "step" in state else {}
    for name in ("context_counts", "generated_counts"):
        if name in state:
            out[name] = state[name].at[rows, tokens].add(1)
    if "tail" in state:
        out["tail"] = mx.concatenate([state["tail"][:, 1:], tokens[:, None]], axis=1)
    return out
