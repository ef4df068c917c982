"""Batched generation: many prompts decoded together, one result per prompt.

:func:`stream_generate_batch` and :func:`generate_batch` are the batched forms of
:func:`~mlx_gen.stream.stream_generate` and :func:`~mlx_gen.generation.generate`: the
same text layer (streaming detokenizer, stop strings with hold-back, custom criteria,
stats) runs once per row on top of :class:`~mlx_gen.batch.decode.BatchDecoder`.

Equivalence: each row's tokens, logprobs (to float rounding), text and finish reason
are those of ``generate(model, prompts[i], settings=<row settings>)``. A row with
``speculative`` settings drafts while it runs alone (:mod:`mlx_gen.batch.speculate`):
greedy, its tokens are still exactly those; sampled, their distribution. Rows that share
a seed share a key chain, so one prompt repeated with one seed gives one answer; pass
a different ``seed`` per row to draw several samples.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import mlx.core as mx

from mlx_gen.batch.decode import BatchDecoder
from mlx_gen.batch.speculate import check_speculative_model
from mlx_gen.generation import GenerationResult
from mlx_gen.loading.loader import LoadedModel
from mlx_gen.plan import DecodePlan, checked_call
from mlx_gen.prompts import Messages, encode_prompt
from mlx_gen.settings import GenerationSettings
from mlx_gen.stream import GenerationChunk, TextAssembler

#: One batch entry: text, token ids, or chat messages (``[{"role", "content"}, ...]``).
BatchPrompt = str | Sequence[int] | Messages


@dataclass(frozen=True)
class _Request:
    ids: list[int]
    settings: GenerationSettings
    plan: DecodePlan


def _encode(tokenizer: Any, prompt: BatchPrompt, add_special_tokens: bool) -> list[int]:
    """Text, ids or messages (a sequence of mappings) to prompt ids."""
    if isinstance(prompt, str):
        return encode_prompt(tokenizer, prompt, add_special_tokens=add_special_tokens)
    items = list(prompt)
    if items and all(isinstance(m, Mapping) for m in items):
        return encode_prompt(tokenizer, messages=items)
    return encode_prompt(tokenizer, items)


def _row_settings(
    count: int,
    settings: GenerationSettings | None,
    per_prompt: Sequence[GenerationSettings | None] | None,
) -> list[GenerationSettings]:
    base = settings or GenerationSettings()
    if per_prompt is None:
        return [base] * count
    if len(per_prompt) != count:
        raise ValueError(
            f"per_prompt_settings has {len(per_prompt)} entries for {count} prompts; "
            "pass one per prompt (None keeps settings)"
        )
    return [s if s is not None else base for s in per_prompt]


def _requests(
    model: LoadedModel,
    prompts: Sequence[BatchPrompt],
    settings: GenerationSettings | None,
    per_prompt: Sequence[GenerationSettings | None] | None,
    add_special_tokens: bool,
) -> list[_Request]:
    """Encode and resolve every row once, naming the index of anything invalid."""
    if isinstance(prompts, str) or not prompts:
        raise ValueError(f"prompts={prompts!r} is invalid: pass a non-empty list of prompts")
    rows = _row_settings(len(prompts), settings, per_prompt)
    out, model_checked = [], False
    for i, (prompt, row) in enumerate(zip(prompts, rows, strict=True)):
        try:
            if row.speculative is not None and not model_checked:  # once for every row
                check_speculative_model(model)
                model_checked = True
            ids, plan = checked_call(
                model, _encode(model.tokenizer, prompt, add_special_tokens), row
            )
            out.append(_Request(ids, row, plan))
        except ValueError as err:
            raise ValueError(f"prompts[{i}]: {err}") from err
    return out


def stream_generate_batch(
    model: LoadedModel,
    prompts: Sequence[BatchPrompt],
    *,
    settings: GenerationSettings | None = None,
    per_prompt_settings: Sequence[GenerationSettings | None] | None = None,
    batch_size: int | None = None,
    add_special_tokens: bool = True,
) -> Iterator[tuple[int, GenerationChunk]]:
    """Generate for every prompt at once, yielding ``(index, chunk)`` as rows produce tokens.

    Args:
        model: A loaded model.
        prompts: Text, token ids or chat messages, one entry per row.
        settings: Options for every row (``None``: the model's defaults).
        per_prompt_settings: Per-row options, one entry per prompt; an entry replaces
            ``settings`` for its row (``None`` keeps ``settings``).
        batch_size: Rows decoded at once; the rest wait and take the places of finished
            rows (``None``: all rows at once).
        add_special_tokens: Add BOS when encoding text prompts.

    Returns:
        An iterator of ``(index, GenerationChunk)``; per index the chunks are exactly
        those of ``stream_generate(model, prompts[index], settings=<row settings>)``.
        Within one step, rows come in batch order; a row with ``max_tokens=0`` yields
        nothing.

    Raises:
        ValueError: Raised here, before any work: an empty prompt list, a
            ``per_prompt_settings`` of another length, an empty prompt, an id outside the
            vocabulary, a prompt that does not fit the model's context or invalid row
            settings (the message starts with ``prompts[i]``). ``max_tokens`` is clamped
            so that each row fits the context, as in :func:`~mlx_gen.decode.generate_tokens`.
    """
    requests = _requests(model, prompts, settings, per_prompt_settings, add_special_tokens)
    decoder = BatchDecoder(
        model,
        [r.ids for r in requests],
        [r.plan for r in requests],
        batch_size=batch_size,
        prefill_step_size=min(r.settings.prefill_step_size for r in requests),
    )
    return _stream(model, decoder, requests)


def _stream(
    model: LoadedModel, decoder: BatchDecoder, requests: list[_Request]
) -> Iterator[tuple[int, GenerationChunk]]:
    start = time.perf_counter()
    mx.reset_peak_memory()
    texts = [TextAssembler(model.tokenizer, r.settings, r.ids, start) for r in requests]
    for index, text in enumerate(texts):
        text.speculation = decoder.speculation(index)  # updated as the row decodes
    ended: set[int] = set()
    for events in decoder:
        for index, out in events:
            if index in ended:  # a round's tokens after its row ended by text
                continue
            chunk = texts[index].feed(out)
            if chunk.finish_reason is not None:
                ended.add(index)
                if out.finish_reason is None:
                    decoder.cancel(index)  # Ended by text: its queued step is discarded.
            yield index, chunk


def generate_batch(
    model: LoadedModel,
    prompts: Sequence[BatchPrompt],
    *,
    settings: GenerationSettings | None = None,
    per_prompt_settings: Sequence[GenerationSettings | None] | None = None,
    batch_size: int | None = None,
    add_special_tokens: bool = True,
) -> list[GenerationResult]:
    """Generate complete answers for many prompts, decoded together.

    Same arguments as :func:`stream_generate_batch`. Returns one
    :class:`GenerationResult` per prompt, in input order, each equal to
    ``generate(model, prompts[i], settings=<row settings>)`` (logprobs to float
    rounding; stats describe the row inside the batch).

    >>> # generate_batch(model, ["Once upon", [1, 450, 29871]],
    >>> #                per_prompt_settings=[GenerationSettings(max_tokens=5),
    >>> #                                     GenerationSettings(temperature=1, seed=3)])
    """
    chunks: list[list[GenerationChunk]] = [[] for _ in prompts]
    for index, chunk in stream_generate_batch(
        model,
        prompts,
        settings=settings,
        per_prompt_settings=per_prompt_settings,
        batch_size=batch_size,
        add_special_tokens=add_special_tokens,
    ):
        chunks[index].append(chunk)
    return [GenerationResult.from_chunks(c, lambda i: model.tokenizer.decode([i])) for c in chunks]
