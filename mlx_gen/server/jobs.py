"""A job (one choice of one request) and the events the worker sends about it.

Per job, in order: :class:`Admitted` (or a 400 :class:`Failed` when its settings are
invalid for the model), optionally one :class:`PromptScores`, then
:class:`~mlx_gen.stream.GenerationChunk` s, then exactly one :class:`Done` or
:class:`Failed`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx

from mlx_gen.logprobs.report import TokenLogprob
from mlx_gen.processors.context import LogitsProcessor, ProcessorContext
from mlx_gen.settings import GenerationSettings
from mlx_gen.stream import TextAssembler


@dataclass(frozen=True)
class Admitted:
    """The job's settings resolved against the model; generation will follow."""


@dataclass(frozen=True)
class PromptScores:
    """Teacher-forced raw logprobs of prompt tokens 1.. (token 0 has none)."""

    reports: list[TokenLogprob]


@dataclass(frozen=True)
class Done:
    """The job ended normally (its last chunk, if any, carries the finish reason)."""


@dataclass(frozen=True)
class Failed:
    """The job failed; the others go on."""

    message: str
    status: int = 500  # 400: the request was invalid (found when resolving it)


class QueueFull(Exception):
    """More jobs than ``max_batch_size + max_queue`` would be in flight."""


class ShuttingDown(Exception):
    """The worker is stopping and takes no new jobs."""


@dataclass(eq=False)
class Job:
    """One choice of one request.

    Args:
        prompt_ids: The prompt.
        settings: Its generation settings (seed included).
        emit: Called from the worker thread with each event; must not block.
        prompt_logprobs: With echo + logprobs: score the prompt with this many top entries.
        held: The job keeps its place in the worker's queue limit after it finishes,
            until :meth:`~mlx_gen.server.worker.Worker.release` (its answer was sent).
    """

    prompt_ids: list[int]
    settings: GenerationSettings
    emit: Callable[[Any], None]
    prompt_logprobs: int | None = None
    held: bool = False
    finished: bool = field(default=False, init=False)
    failure: str | None = field(default=None, init=False)
    text: TextAssembler | None = field(default=None, init=False)
    cached_tokens: int = field(default=0, init=False)  # prompt tokens from the prefix cache


class Guarded:
    """A processor whose exception fails its job instead of the whole batch."""

    def __init__(self, processor: LogitsProcessor, job: Job) -> None:
        self.processor, self.job = processor, job

    def __call__(self, logits: mx.array, ctx: ProcessorContext) -> mx.array:
        try:
            return self.processor(logits, ctx)
        except Exception as err:  # noqa: BLE001 - any processor error fails this job only
            self.job.failure = self.job.failure or f"a logits processor failed: {err}"
            return logits
