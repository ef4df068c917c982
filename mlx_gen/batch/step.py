"""One lazy decode step for a batch of rows, and reading it back.

After the batched forward pass everything is per row and mirrors :mod:`mlx_gen.decode`:

* processors run on the row's ``logits[i:i+1]`` (the ``(1, V)`` contract) with the
  row's own :class:`ProcessorContext`: its unpadded prompt, its generated ids, its step;
* sampling filters and the draw use the row's :class:`SamplingParams` and its own key
  chain (``mx.random.key(seed)``, split once per sampled step), so a seeded row draws
  what it draws alone; an all-greedy batch takes one batched argmax;
* logprobs (same modes and report as :mod:`mlx_gen.logprobs.report`) are packed per row and
  concatenated, so reading a step costs one read of the ``(B,)`` ids plus one read of
  the packs, only when some row asked for logprobs;
* a row with nothing to sample from (no finite maximum: every id banned, a NaN or a
  ``+inf``) reads back ``NO_TOKEN`` and finishes with ``"no_allowed_token"``, exactly as
  in :mod:`mlx_gen.decode`.
* rows with a constraint (structured output, :mod:`mlx_gen.guided`): when any row has
  one, ``build_step`` queues only the forward pass and processors, and
  :func:`sample_pending` applies every constrained row's bitmask (built on the host
  after the previous step is read, on llguidance's threads) before filters and sampling.
* a row's key chain and generated ids are its own whichever path decodes a step: a
  row leaving a compiled group (:mod:`mlx_gen.batch.tail`) for the per-row or
  constrained path takes both back from the group first (``release``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
import numpy as np

from mlx_gen.batch.tail import group_for, grouped, release
from mlx_gen.constraints import Matcher, apply_token_bitmask, fill_masks
from mlx_gen.generated_token import GeneratedToken
from mlx_gen.loading.loader import LoadedModel
from mlx_gen.logprobs.report import pack, unpack
from mlx_gen.no_allowed_token import NO_ALLOWED_TOKEN, NO_TOKEN, feedable, has_choice, mark
from mlx_gen.plan import DecodePlan
from mlx_gen.processors.context import ProcessorContext
from mlx_gen.sampling import filter_logits, sample
from mlx_gen.validation import run_processors

# Usable from any thread (MLX 0.32's mx.new_stream is bound to the thread that created it;
# the server decodes on a worker thread). Callers must not decode from two threads at
# once. Older MLX has no new_thread_unsafe_stream, and its new_stream is not thread-bound.
STREAM = getattr(mx, "new_thread_unsafe_stream", mx.new_stream)(mx.default_device())


@dataclass(eq=False)
class Row:
    """One prompt's state while it decodes."""

    index: int
    plan: DecodePlan
    prompt_ids: list[int]
    step: int = 0  # The position the next built step generates.
    done: bool = False  # EOS read or cancelled: its queued token is discarded.
    spec: Any = None  # its speculative state (mlx_gen.batch.speculate), if it drafts
    prompt: mx.array = field(init=False)
    key: mx.array = field(init=False)
    generated: mx.array = field(init=False)
    guide: Matcher | None = field(init=False)  # the row's grammar state, if constrained

    def __post_init__(self) -> None:
        self.prompt = mx.array(self.prompt_ids, dtype=mx.int32)
        self.key = mx.random.key(self.plan.seed)
        self.generated = mx.zeros((0,), dtype=mx.int32)
        self.guide = Matcher(self.plan.constraint) if self.plan.constraint else None

    @property
    def ended(self) -> bool:
        """``step`` is its last allowed position (``max_tokens - 1``): no token comes after."""
        return self.step + 1 >= self.plan.max_tokens

    def next_key(self) -> mx.array:
        """The same chain as single-sequence decoding: one split per sampled step."""
        assert not grouped(self), "a grouped row's key chain lives in its group"
        self.key, key = mx.random.split(self.key)
        return key


@dataclass
class QueuedStep:
    """A built (possibly still computing) step: row ``i`` produced ``tokens[i]``."""

    rows: list[Row]
    steps: list[int]
    tokens: mx.array  # (B,) int32
    packed: mx.array | None  # every row's logprob packs, flattened, or None
    widths: list[list[int]]  # per row, per logprob mode: its length in ``packed``
    pending: tuple[mx.array, mx.array] | None = None  # (logits, processed) to sample


def _process(logits: mx.array, rows: list[Row]) -> mx.array:
    """Each row's processors on its own ``(1, V)`` slice; ``(B, V)`` out."""
    if not any(r.plan.processors for r in rows):
        return logits
    out = []
    for i, row in enumerate(rows):
        row_logits = logits[i : i + 1]
        if row.plan.processors:
            assert not grouped(row), "a grouped row's history lives in its group"
            ctx = ProcessorContext(row.prompt, row.generated, row.step)
            row_logits = run_processors(row.plan.processors, row_logits, ctx)
        out.append(row_logits)
    return mx.concatenate(out, axis=0)


def _sample(processed: mx.array, rows: list[Row]) -> tuple[mx.array, mx.array]:
    """``(tokens (B,), filtered (B, V))``: per-row filters and keys, as single decoding does."""
    if all(r.plan.sampling.greedy for r in rows):
        return sample(processed, None, greedy=True), processed
    tokens, filtered = [], []
    for i, row in enumerate(rows):
        params = row.plan.sampling
        row_filtered = filter_logits(processed[i : i + 1], params)
        key = None if params.greedy else row.next_key()
        tokens.append(sample(row_filtered, key, params.greedy))
        filtered.append(row_filtered)
    return mx.concatenate(tokens), mx.concatenate(filtered, axis=0)


def _pack(
    logits: mx.array, filtered: mx.array, tokens: mx.array, rows: list[Row]
) -> tuple[mx.array | None, list[list[int]]]:
    """Every requested logprob report, flattened into one array, and each part's length."""
    sources = {"raw": logits, "processed": filtered}
    parts, widths = [], []
    for i, row in enumerate(rows):
        request = row.plan.logprobs
        modes = request.modes if request is not None else ()
        row_parts = [
            pack(sources[m][i : i + 1], tokens[i : i + 1], request).reshape(-1) for m in modes
        ]
        parts += row_parts
        widths.append([p.shape[0] for p in row_parts])
    return (mx.concatenate(parts) if parts else None), widths


def _valid(logits: mx.array, filtered: mx.array, rows: list[Row]) -> mx.array:
    """``(B,)``: the row has a token to choose, and a finite raw row if raw is reported."""
    raw = [r.plan.logprobs is not None and "raw" in r.plan.logprobs.modes for r in rows]
    ok = has_choice(filtered)
    if any(raw):
        ok = ok & (has_choice(logits) | ~mx.array(raw))
    return ok


def build_step(
    model: LoadedModel, cache: list[Any], inputs: mx.array, rows: list[Row]
) -> QueuedStep:
    """Queue one lazy step for ``rows`` (``inputs``: their last tokens, ``(B,)``)."""
    guided = any(r.guide is not None for r in rows)
    with mx.stream(STREAM):
        inputs = feedable(inputs)  # A NO_TOKEN look-ahead feeds id 0 (then discarded).
        logits = model.model(inputs[:, None], cache=cache)[:, -1, :]  # (B, V)
        # Rows sharing one configuration (no constraint): one compiled tail for all.
        group = None if guided else group_for(rows, logits.shape[-1])
        if group is not None:
            tokens, packed = group.step(logits)  # NO_TOKEN-marked like the per-row path
            n_modes = len(rows[0].plan.logprobs.modes) if packed is not None else 0
            widths = [[packed.shape[-1]] * n_modes if n_modes else [] for _ in rows]
            packed = None if packed is None else packed.reshape(-1)
        else:  # per-row path: each row first takes back its key chain and history
            release(rows)
            processed = _process(logits, rows)
    if guided:  # sampled by sample_pending once the previous step is read
        mx.async_eval(processed)
        return QueuedStep(rows, [r.step for r in rows], inputs, None, [], (logits, processed))
    if group is None:
        with mx.stream(STREAM):
            tokens, filtered = _sample(processed, rows)
            packed, widths = _pack(logits, filtered, tokens, rows)
            tokens = mark(tokens, _valid(logits, filtered, rows))  # Read with the ids.
    # Queue the step now; the caller reads the previous one meanwhile.
    mx.async_eval(tokens, *([packed] if packed is not None else []))
    return QueuedStep(rows, [r.step for r in rows], tokens, packed, widths)


def sample_pending(queued: QueuedStep) -> None:
    """Mask, filter and sample a step ``build_step`` left pending (no-op otherwise).

    Called after the previous step is read, so each constrained row's matcher has
    consumed its last token. A row that is already done gets an all-allowed mask (its
    token is discarded); a row left with no allowed token samples ``-1``.
    """
    if queued.pending is None:
        return
    logits, processed = queued.pending
    rows = queued.rows
    words = max(r.guide.words for r in rows if r.guide is not None)
    bitmask = np.full((len(rows), words), -1, dtype=np.int32)
    fill_masks(
        [(r.guide, i) for i, r in enumerate(rows) if r.guide is not None and not r.done],
        bitmask,
    )
    with mx.stream(STREAM):
        masked = apply_token_bitmask(processed, mx.array(bitmask))
        tokens, filtered = _sample(masked, rows)
        guided = mx.array([r.guide is not None for r in rows])
        tokens = mx.where(guided & (mx.max(masked, axis=-1) == -mx.inf), -1, tokens)
        packed, widths = _pack(logits, filtered, mx.maximum(tokens, 0), rows)
    mx.async_eval(tokens, *([packed] if packed is not None else []))
    queued.tokens, queued.packed, queued.widths, queued.pending = tokens, packed, widths, None


def _guided_event(row: Row, step: int, value: int, reports: dict) -> GeneratedToken:
    """A constrained row's token (its matcher advanced), or its ``constraint`` finish."""
    if value < 0:
        row.done = True
        return GeneratedToken(
            -1, step, {}, "constraint", row.guide.accepting, row.guide.stop_message()
        )
    effect = row.guide.grammar_effect()  # of the mask this token was sampled under
    row.guide.consume(value)
    finish = "stop" if value in row.plan.eos_token_ids else None
    if finish is None and step + 1 == row.plan.max_tokens:
        finish = "length"
    row.done = finish is not None
    return GeneratedToken(value, step, reports, finish, row.guide.accepting, grammar=effect)


def read_step(current: QueuedStep) -> list[tuple[int, GeneratedToken]]:
    """Read a step (waiting for it): ``(index, token)`` for every row not already done.

    A row whose token is an EOS id or its ``max_tokens``-th is marked done here.
    """
    values = current.tokens.tolist()  # The one host read per step (ids).
    flat = current.packed.tolist() if current.packed is not None else []
    out, offset = [], 0
    for row, step, value, widths in zip(
        current.rows, current.steps, values, current.widths, strict=True
    ):
        if row.done:  # EOS read or cancelled after this step was queued.
            offset += sum(widths)
            continue
        if value == NO_TOKEN:  # nothing allowed: a constrained row says why
            offset += sum(widths)
            if row.guide is not None:
                out.append((row.index, _guided_event(row, step, value, {})))
                continue
            row.done = True
            out.append((row.index, GeneratedToken(NO_TOKEN, step, {}, NO_ALLOWED_TOKEN)))
            continue
        reports = {}
        for mode, width in zip(row.plan.logprobs.modes if widths else (), widths, strict=True):
            reports[mode] = unpack(flat[offset : offset + width], value, row.plan.logprobs)
            offset += width
        if row.guide is not None:
            out.append((row.index, _guided_event(row, step, value, reports)))
            continue
        finish = "stop" if value in row.plan.eos_token_ids else None
        if finish is None and step + 1 == row.plan.max_tokens:
            finish = "length"
        row.done = finish is not None
        out.append((row.index, GeneratedToken(value, step, reports, finish)))
    return out
