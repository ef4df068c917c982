"""One lazy decode step for a batch of rows, and reading it back.

After the batched forward pass everything is per row and mirrors :mod:`mlx_gen.decode`:

* processors run on the row's ``logits[i:i+1]`` (the ``(1, V)`` contract) with the
  row's own :class:`ProcessorContext`: its unpadded prompt, its generated ids, its step;
* sampling filters and the draw use the row's :class:`SamplingParams` and its own key
  chain (``mx.random.key(seed)``, split once per sampled step), so a seeded row draws
  what it draws alone; an all-greedy batch takes one batched argmax;
* logprobs (same modes and report as :mod:`mlx_gen.logprobs.report`) are packed per row and
  concatenated, so reading a step costs one read of the ``(B,)`` ids plus one read of
  the packs, only when some row asked for logprobs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx

from mlx_gen.batch.tail import group_for
from mlx_gen.decode import DecodePlan, GeneratedToken
from mlx_gen.loading.loader import LoadedModel
from mlx_gen.logprobs.report import pack, unpack
from mlx_gen.processors.context import ProcessorContext
from mlx_gen.sampling import filter_logits, sample

STREAM = mx.new_stream(mx.default_device())


@dataclass(eq=False)
class Row:
    """One prompt's state while it decodes."""

    index: int
    plan: DecodePlan
    prompt_ids: list[int]
    step: int = 0  # The position the next built step generates.
    done: bool = False  # EOS read or cancelled: its queued token is discarded.
    prompt: mx.array = field(init=False)
    key: mx.array = field(init=False)
    generated: mx.array = field(init=False)

    def __post_init__(self) -> None:
        self.prompt = mx.array(self.prompt_ids, dtype=mx.int32)
        self.key = mx.random.key(self.plan.seed)
        self.generated = mx.zeros((0,), dtype=mx.int32)

    def next_key(self) -> mx.array:
        """The same chain as single-sequence decoding: one split per sampled step."""
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


def _process(logits: mx.array, rows: list[Row]) -> mx.array:
    """Each row's processors on its own ``(1, V)`` slice; ``(B, V)`` out."""
    if not any(r.plan.processors for r in rows):
        return logits
    out = []
    for i, row in enumerate(rows):
        row_logits = logits[i : i + 1]
        if row.plan.processors:
            ctx = ProcessorContext(row.prompt, row.generated, row.step)
            for processor in row.plan.processors:
                row_logits = processor(row_logits, ctx)
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


def build_step(
    model: LoadedModel, cache: list[Any], inputs: mx.array, rows: list[Row]
) -> QueuedStep:
    """Queue one lazy step for ``rows`` (``inputs``: their last tokens, ``(B,)``)."""
    with mx.stream(STREAM):
        logits = model.model(inputs[:, None], cache=cache)[:, -1, :]  # (B, V)
        group = group_for(rows, logits.shape[-1])  # rows sharing one config: compiled tail
        if group is not None:
            tokens, packed = group.step(logits)
            n_modes = len(rows[0].plan.logprobs.modes) if packed is not None else 0
            widths = [[packed.shape[-1]] * n_modes if n_modes else [] for _ in rows]
            packed = None if packed is None else packed.reshape(-1)
        else:
            processed = _process(logits, rows)
            tokens, filtered = _sample(processed, rows)
            packed, widths = _pack(logits, filtered, tokens, rows)
    # Queue the step now; the caller reads the previous one meanwhile.
    mx.async_eval(tokens, *([packed] if packed is not None else []))
    return QueuedStep(rows, [r.step for r in rows], tokens, packed, widths)


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
        reports = {}
        for mode, width in zip(row.plan.logprobs.modes if widths else (), widths, strict=True):
            reports[mode] = unpack(flat[offset : offset + width], value, row.plan.logprobs)
            offset += width
        finish = "stop" if value in row.plan.eos_token_ids else None
        if finish is None and step + 1 == row.plan.max_tokens:
            finish = "length"
        row.done = finish is not None
        out.append((row.index, GeneratedToken(value, step, reports, finish)))
    return out
