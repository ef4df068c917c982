"""The generation worker: one thread owns the model and runs continuous batching.

Requests become :class:`Job` s (one per choice). Between two decode steps the worker
admits new jobs into the running :class:`~mlx_gen.batch.decode.BatchDecoder` (they are
prefilled and join the batch) and drops cancelled ones (their queued step is discarded).
Each job keeps its own settings, seed, processors, stop strings and logprob request, and
runs the same text layer as :func:`~mlx_gen.stream.stream_generate`
(:class:`~mlx_gen.stream.TextAssembler`), so its chunks are those of a single
``stream_generate`` call with the same settings and seed.

Events (:mod:`mlx_gen.server.jobs`) reach the request handler through ``job.emit``
(thread-safe). A processor that raises fails its own job only.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from typing import Any

import mlx.core as mx

from mlx_gen.batch.decode import BatchDecoder
from mlx_gen.loading.loader import LoadedModel
from mlx_gen.logprobs.report import TokenLogprob
from mlx_gen.no_allowed_token import NO_TOKEN
from mlx_gen.plan import DecodePlan
from mlx_gen.prefix_cache import PrefixCache
from mlx_gen.scoring import score
from mlx_gen.server.jobs import (
    Admitted,
    Done,
    Failed,
    Guarded,
    Job,
    PromptScores,
    QueueFull,
    ShuttingDown,
)
from mlx_gen.server.metrics import EngineMetrics
from mlx_gen.server.thread_park import park
from mlx_gen.stream import TextAssembler

__all__ = ["Worker"]  # the events it emits live in mlx_gen.server.jobs

LOG = logging.getLogger("mlx_gen.server")


class Worker:
    """The thread that owns the model.

    Args:
        model: The loaded model.
        max_batch_size: Jobs decoded at once.
        max_queue: Jobs that may wait for a place beyond those.
        prefill_step_size: Prompt tokens per forward pass.
        metrics: What it reports to (``/metrics``); also the hook for the prefix cache
            (``metrics.prefix_cache``) and speculation (``metrics.speculation``).
        prefix_cache: Every job looks its prompt up here and stores its KV when it
            leaves the batch (``None``: nothing is kept between requests).
    """

    def __init__(
        self,
        model: LoadedModel,
        *,
        max_batch_size: int = 16,
        max_queue: int = 64,
        prefill_step_size: int = 512,
        metrics: EngineMetrics | None = None,
        prefix_cache: PrefixCache | None = None,
    ) -> None:
        self.model, self.max_batch_size, self.max_queue = model, max_batch_size, max_queue
        # Weights load lazily, and a lazy MLX array is bound to the stream (so the thread)
        # that created it: run one token here, on the loading thread, so the worker
        # thread only ever sees evaluated weights.
        mx.eval(model.model(mx.array([[0]], dtype=mx.int32)))
        self.prefill_step_size = prefill_step_size
        self.metrics = metrics if metrics is not None else EngineMetrics()
        self.prefix_cache = prefix_cache
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._unsent = 0  # finished held jobs not yet released (their answer not yet sent)
        self._stopped = threading.Event()
        self._closing = False
        self.generated_tokens = 0  # over the worker's life (read by /health)
        self._thread = threading.Thread(target=self._run, name="mlx-gen-worker", daemon=True)
        self._decoder: BatchDecoder | None = None
        self._active: dict[int, Job] = {}

    @property
    def in_flight(self) -> int:
        """Jobs submitted and not yet finished."""
        return self._in_flight

    @property
    def unsent(self) -> int:
        """Held jobs that finished and are not yet released (their answer is unsent)."""
        return self._unsent

    @property
    def running(self) -> int:
        """Jobs in the running batch (not those the decoder holds for a free place)."""
        decoder = self._decoder  # read once: the worker thread may drop it meanwhile
        return max(0, len(self._active) - (decoder.waiting if decoder is not None else 0))

    def start(self) -> None:
        """Start the worker thread."""
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Fail every pending job ("server shutting down") and end the thread's work."""
        with self._lock:
            self._closing = True
        self._inbox.put(("stop", None))
        self._stopped.wait(timeout)

    def submit(self, jobs: list[Job]) -> None:
        """Queue ``jobs`` (all of one request) for generation.

        Jobs count against the limit while they run and, when ``held``, until
        :meth:`release` (a finished answer not yet sent still holds its place).

        Raises:
            QueueFull: When they do not fit in ``max_batch_size + max_queue``.
            ShuttingDown: After :meth:`stop`.
        """
        with self._lock:
            if self._closing:
                raise ShuttingDown("the server is shutting down")
            taken = self._in_flight + self._unsent
            if taken + len(jobs) > self.max_batch_size + self.max_queue:
                raise QueueFull(
                    f"{taken} requests are in flight or unsent; the server takes at most "
                    f"{self.max_batch_size} running + {self.max_queue} queued"
                )
            self._in_flight += len(jobs)
        for job in jobs:
            self.metrics.submitted(job)
            self._inbox.put(("add", job))

    def cancel(self, job: Job) -> None:
        """Stop ``job`` (e.g. its client went away); its place is freed at the next step."""
        self._inbox.put(("cancel", job))

    def release(self, jobs: list[Job]) -> None:
        """The answers of ``jobs`` are sent (or abandoned): free their places (idempotent)."""
        with self._lock:
            for job in jobs:
                if job.held:
                    job.held = False
                    self._unsent -= job.finished

    def _finish(self, job: Job, event: Any) -> None:
        with self._lock:
            self._in_flight -= 1
            job.finished = True
            self._unsent += job.held
        self.metrics.finished(job)
        try:
            job.emit(event)
        except RuntimeError:  # The handler's event loop is gone (shutdown).
            pass

    def _run(self) -> None:
        while True:
            # Idle: block for work. Busy: take what arrived, then run one step.
            messages = [] if self._active else [self._inbox.get()]
            while not self._inbox.empty():
                messages.append(self._inbox.get_nowait())
            for i, (kind, job) in enumerate(messages):
                if not self._handle(kind, job):
                    for later_kind, later in messages[i + 1 :]:
                        if later_kind == "add":
                            self._finish(later, Failed("the server is shutting down"))
                    self._park()
                    return
            if self._active:
                self._step()

    def _park(self) -> None:
        """End the worker's work, then keep the thread alive until exit (see thread_park)."""
        self._decoder, self._active = None, {}
        park(self._stopped)

    def _handle(self, kind: str, job: Job | None) -> bool:
        """One inbox message; False to stop the thread."""
        if kind == "stop":
            message = "the server is shutting down"
            self._fail_all(message)
            while not self._inbox.empty():
                kind, job = self._inbox.get_nowait()
                if kind == "add":
                    self._finish(job, Failed(message))
            return False
        if kind == "add":
            self._admit(job)
        elif kind == "cancel":
            for index, active in list(self._active.items()):
                if active is job:
                    self._decoder.cancel(index)
                    del self._active[index]
                    self._finish(job, Done())
            if not self._active:
                self._decoder = None
        return True

    def _admit(self, job: Job) -> None:
        try:
            plan = DecodePlan.build(self.model, job.settings)
        except ValueError as err:
            self._finish(job, Failed(str(err), 400))
            return
        job.emit(Admitted())
        self.metrics.admitted(job, len(job.prompt_ids))
        try:
            if job.prompt_logprobs is not None:
                job.emit(PromptScores(self._score_prompt(job)))
        except Exception as err:  # noqa: BLE001 - reported to this job's client only
            self._finish(job, Failed(f"scoring the prompt failed: {type(err).__name__}: {err}"))
            return
        if plan.max_tokens == 0:
            self._finish(job, Done())
            return
        plan = dataclasses.replace(plan, processors=tuple(Guarded(p, job) for p in plan.processors))
        if self._decoder is None:
            self._decoder = BatchDecoder(
                self.model,
                [],
                [],
                batch_size=self.max_batch_size,
                prefill_step_size=self.prefill_step_size,
                prefix_cache=self.prefix_cache,
            )
        job.text = TextAssembler(
            self.model.tokenizer, job.settings, job.prompt_ids, time.perf_counter()
        )
        self._active[self._decoder.add(job.prompt_ids, plan)] = job

    def _score_prompt(self, job: Job) -> list[TokenLogprob]:
        ids = job.prompt_ids
        if len(ids) < 2:
            return []
        return score(self.model, ids[:1], ids[1:], top_n=job.prompt_logprobs).logprobs

    def _step(self) -> None:
        try:
            events = self._decoder.step()
        except Exception as err:  # noqa: BLE001 - not attributable to one job
            self._step_failed(err)
            return
        for index, out in events:
            job = self._active.get(index)
            if job is None:
                continue
            if out.token != NO_TOKEN:
                self.generated_tokens += 1
                self.metrics.token(job)
            if out.step == 0:  # the first token: the row's prefill is done
                job.cached_tokens = self._decoder.cached_tokens.get(index, 0)
                if job.cached_tokens:
                    hit_bytes = self._decoder.cached_bytes.get(index, 0)
                    self.metrics.prefix_cache(hit_tokens=job.cached_tokens, hit_bytes=hit_bytes)
            try:
                chunk = job.text.feed(out)
            except Exception as err:  # noqa: BLE001 - a stopping criterion of this job
                job.failure = f"{type(err).__name__}: {err}"
                continue
            if chunk.finish_reason is not None and out.finish_reason is None:
                self._decoder.cancel(index)  # Ended by text: its queued step is discarded.
            job.emit(chunk)
            if chunk.finish_reason is not None:
                del self._active[index]
                if (spec := self._decoder.speculation(index)) is not None and spec.drafted:
                    self.metrics.speculation(drafted=spec.drafted, accepted=spec.accepted)
                self._finish(job, Done())
        for index, job in list(self._active.items()):
            if job.failure is not None:
                self._decoder.cancel(index)
                del self._active[index]
                self._finish(job, Failed(job.failure))
        if not self._active:
            self._decoder = None
            mx.clear_cache()

    def _step_failed(self, err: Exception) -> None:
        """A decode step raised: fail every active job (the server goes on)."""
        LOG.exception("a decode step failed", exc_info=err)
        self._fail_all(f"generation failed: {type(err).__name__}: {err}")

    def _fail_all(self, message: str) -> None:
        """Fail every active job (a step failed, or shutdown) and drop the batch."""
        for job in self._active.values():
            self._finish(job, Failed(message))
        self._active.clear()
        self._decoder = None
