"""The server under ``mlx.launch``: every rank runs the same worker loop in lockstep.

Rank 0 serves HTTP and decides; each loop iteration it sends the other ranks what
changes the batch (:mod:`mlx_gen.server.wire` ops: admitted jobs with prompt ids,
settings and a resolved seed; cancellations; the stop) through ``mx.distributed``
collectives, then every rank applies the same ops and runs the same decode step. The
sharded model gives every rank the same logits bit for bit, and sampling, masks,
stopping, the text layer and prompt-lookup speculation (drafting whenever lookup finds
drafts, ``measure_cost=False``: no rank reads its clock to decide) are pure functions of
them, so every rank keeps the same batch without exchanging a token. While idle, rank 0
sends an empty step every :data:`HEARTBEAT` seconds, so a lost rank is seen without
traffic. Each rank's prefix cache sees the same lookups and inserts in the same order
under the same budget, so it makes the same decisions; each step's broadcast carries
every rank's digest of it (:mod:`mlx_gen.server.rank_channel`), and ranks that differ
stop with a 503 naming the rank instead of answering differently.

Faults (rank 0): a collective that fails (a rank died: the ring reports the lost
connection) or a step that makes no progress for ``rank_timeout`` seconds (a rank
hangs) fails every in-flight job with a 503 naming the rank, refuses new ones with a
503, and calls ``on_failure`` (the server then exits with status 1, so the launcher
exits non-zero). Under ranks any failed step is such a fault: ranks that may no longer
agree must not go on.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import mlx.core as mx

from mlx_gen.batch.step import STREAM
from mlx_gen.server.jobs import Done, Failed, Job, ShuttingDown
from mlx_gen.server.rank_channel import Channel, cache_digest
from mlx_gen.server.wire import NotData, decode_ops, decode_settings, encode_ops, encode_settings
from mlx_gen.server.worker import Worker

__all__ = ["HEARTBEAT", "LockstepWorker"]

LOG = logging.getLogger("mlx_gen.server")
HEARTBEAT = 1.0  # seconds between empty steps while idle
_TIMED = (
    "speculative=PromptLookup(measure_cost=True) cannot run on a distributed server: each "
    "rank would time its own rounds and decide differently (use measure_cost=False)"
)


class LockstepWorker(Worker):
    """A :class:`~mlx_gen.server.worker.Worker` that runs in lockstep with the other ranks.

    Rank 0's instance is the server's worker (a thread); the other ranks call
    :meth:`follow` on their main thread. Each rank keeps its own prefix cache (its shard
    of every entry) under rank 0's byte budget: fed the same ops in the same order, every
    rank makes the same hits, inserts and evictions, and each step's broadcast checks that
    (:func:`~mlx_gen.server.rank_channel.cache_digest`; a rank that differs fails the
    server with a 503 naming it).

    Args:
        model: The sharded model (the same on every rank).
        channel: The ranks.
        rank_timeout: Seconds one step may take before rank 0 declares a rank hung.
        on_failure: Called once (rank 0) after a rank failure was answered.
        **options: The :class:`Worker` limits (``max_batch_size`` ...; ``metrics``).
    """

    def __init__(
        self,
        model: Any,
        *,
        channel: Channel,
        rank_timeout: float = 60.0,
        on_failure: Callable[[], None] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(model, **options)
        self.channel, self.rank_timeout, self.on_failure = channel, rank_timeout, on_failure
        channel.digest = lambda: cache_digest(self.prefix_cache)
        self.failure: str | None = None
        self._ids: dict[int, Job] = {}  # wire id -> job (rank 0: its jobs; others: theirs)
        self._wire_id: dict[int, int] = {}  # id(job) -> wire id, rank 0
        self._next_id = 0
        self._busy_since: float | None = None

    def start(self) -> None:
        """Start the worker thread and, on rank 0, the watchdog."""
        super().start()
        threading.Thread(target=self._watch, name="mlx-gen-watchdog", daemon=True).start()

    def follow(self) -> int:
        """Run the loop on this (non-zero) rank until rank 0 stops; the exit status."""
        self._run()
        return 0 if self.failure is None else 1

    def submit(self, jobs: list[Job]) -> None:
        """As :meth:`Worker.submit`; after a rank failure, ``ShuttingDown`` naming it."""
        if self.failure is not None:
            raise ShuttingDown(self.failure)
        super().submit(jobs)

    # -- the loop --------------------------------------------------------------------

    def _take(self) -> list[tuple[str, Any]]:
        """Rank 0: what arrived (waiting up to a heartbeat while idle)."""
        messages = []
        if not self._active:
            try:
                messages.append(self._inbox.get(timeout=HEARTBEAT))
            except queue.Empty:  # idle: send an empty step (the heartbeat)
                pass
        while not self._inbox.empty():
            messages.append(self._inbox.get_nowait())
        return messages

    def _share(self, messages: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        """Rank 0 encodes and sends its messages; the others receive and rebuild them.

        The decoder queues step ``n + 1`` (``mx.async_eval``) before reading step ``n``,
        and that step's all-reduces run on :data:`STREAM`: wait for them first, so every
        rank issues its collectives in the same order (the ring pairs them by order).
        Nothing is queued after this until the step, so prompt scoring is ordered too.
        """
        mx.synchronize(STREAM)
        if self.channel.rank != 0:
            return [self._rebuild(op) for op in decode_ops(self.channel.broadcast())]
        ops, kept = [], []
        for kind, job in messages:
            op = self._op(kind, job)
            if op is not None:
                ops.append(op)
                kept.append((kind, job))
        self.channel.broadcast(encode_ops(ops) if ops else b"")
        return kept

    def _op(self, kind: str, job: Job | None) -> list[Any] | None:
        """Rank 0: the op for one message (``None``: nothing to send)."""
        if kind == "stop":
            return ["stop"]
        if kind == "cancel":
            wire = self._wire_id.pop(id(job), None)
            return None if wire is None else ["cancel", wire]
        if job.settings.seed is None:  # rank 0 draws; every rank uses its draw
            job.settings = _with_seed(job.settings)
        try:
            settings = encode_settings(job.settings)
            if getattr(job.settings.speculative, "measure_cost", False):
                raise NotData(_TIMED)
        except NotData as err:
            self._finish(job, Failed(str(err), 400))
            return None
        wire, self._next_id = self._next_id, self._next_id + 1
        self._wire_id[id(job)] = wire
        return ["add", wire, list(job.prompt_ids), settings, job.prompt_logprobs]

    def _finish(self, job: Job, event: Any) -> None:
        self._wire_id.pop(id(job), None)  # finished on every rank: a later cancel is moot
        super()._finish(job, event)

    def _rebuild(self, op: list[Any]) -> tuple[str, Any]:
        """A follower's message for rank 0's ``op`` (its own job, whose events go nowhere)."""
        if op[0] == "stop":
            return ("stop", None)
        if op[0] == "cancel":
            return ("cancel", self._ids.pop(op[1], None))
        _, wire, prompt_ids, settings, prompt_logprobs = op

        def emit(event: Any, wire: int = wire) -> None:
            if isinstance(event, (Done, Failed)):
                self._ids.pop(wire, None)

        job = Job(prompt_ids, decode_settings(settings), emit, prompt_logprobs=prompt_logprobs)
        self._ids[wire] = job
        return ("add", job)

    def _run(self) -> None:
        try:
            while True:
                messages = self._take() if self.channel.rank == 0 else []
                self._busy_since = time.monotonic()
                messages = self._share(messages)
                for i, (kind, job) in enumerate(messages):
                    if not self._handle(kind, job):
                        for later_kind, later in messages[i + 1 :]:
                            if later_kind == "add":
                                self._finish(later, Failed("the server is shutting down"))
                        self._busy_since = None
                        self._park()
                        return
                if self._active:
                    self._step()
                self._busy_since = None
        except Exception as err:  # noqa: BLE001 - a collective or a step failed
            self._rank_failed(f"{type(err).__name__}: {err}")
            if self.channel.rank == 0:
                threading.Event().wait()  # park (see Worker._park); the process is exiting

    def _step_failed(self, err: Exception) -> None:
        raise err  # under ranks, a failed step ends the server (see the module docstring)

    def _park(self) -> None:
        if self.channel.rank == 0:
            super()._park()
        self._decoder, self._active = None, {}
        self._stopped.set()

    # -- faults ----------------------------------------------------------------------

    def _watch(self) -> None:
        """Rank 0's watchdog: a step running longer than ``rank_timeout`` is a hung rank."""
        while self.failure is None and not self._stopped.is_set():
            time.sleep(min(0.5, self.rank_timeout / 4))
            since = self._busy_since
            if since is not None and time.monotonic() - since > self.rank_timeout:
                self._rank_failed(f"no step completed in {self.rank_timeout:g} s")

    def _rank_failed(self, cause: str) -> None:
        """A rank died or hangs: :meth:`abort` with a message naming it."""
        self.abort(
            f"the distributed server lost {self.channel.followers()} ({cause}); it is stopping"
        )

    def stopped_by_launcher(self) -> None:
        """Rank 0 got SIGTERM/SIGINT: the launcher stops every rank after one exited, or
        on Ctrl-C; in-flight and new requests get a 503 (:meth:`abort`).

        Called from a signal handler, which may have interrupted the main thread while it
        held the worker's lock: the abort runs on a thread of its own.
        """
        message = (
            f"the distributed server is stopping: {self.channel.followers()} exited, or the "
            "launcher was interrupted (the launcher's last line names the rank)"
        )
        threading.Thread(target=self.abort, args=(message,), daemon=True).start()

    def abort(self, message: str) -> None:
        """Answer every job 503 with ``message``, refuse new ones, report the failure.

        Thread-safe and idempotent (the first message wins); rank 0's server calls it
        when the launcher stops it (a rank exited, or Ctrl-C), the worker and the
        watchdog when a rank fails.
        """
        with self._lock:
            if self.failure is not None:
                return
            self.failure = message
            self._closing = True
        LOG.error("%s", message)
        if self.channel.rank != 0:
            self._stopped.set()
            return
        for job in list(self._active.values()):
            self._finish(job, Failed(message, 503))
        self._active.clear()
        while not self._inbox.empty():
            kind, job = self._inbox.get_nowait()
            if kind == "add":
                self._finish(job, Failed(message, 503))
        self._stopped.set()
        if self.on_failure is not None:
            self.on_failure()


def _with_seed(settings: Any) -> Any:
    """``settings`` with a fresh 32-bit seed (rank 0's draw, sent to every rank)."""
    return dataclasses.replace(settings, seed=int.from_bytes(os.urandom(4), "little"))
