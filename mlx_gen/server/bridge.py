"""The async side of a request: submit its jobs to the worker and await their events.

The worker thread hands each event to the request's event loop
(``call_soon_threadsafe``); the handler reads ``(choice, event)`` pairs until every
choice has ended. When the client goes away (the streaming response is cancelled, or a
non-streaming request sees the disconnect), the unfinished jobs are cancelled and leave
the batch at the next step.

Backpressure: a streaming client that stops reading stops the handler (the socket's
buffer is full), so events wait here. At most ``max_unread_events`` may wait per
request (default :data:`MAX_UNREAD_EVENTS`); one more cancels the request's jobs, logs
why, and ends each choice with a 503 error event (what was already queued comes first).
A request counts against the worker's queue limit until :meth:`RequestRun.close` (its
answer was sent or abandoned), not only while its jobs run.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from mlx_gen.server.errors import ApiError
from mlx_gen.server.jobs import Admitted, Done, Failed, Job, QueueFull, ShuttingDown
from mlx_gen.server.worker import Worker
from mlx_gen.settings import GenerationSettings

POLL_SECONDS = 0.5
#: Events one request may leave unread before it is cancelled (``--max-unread-events``).
MAX_UNREAD_EVENTS = 4096
LOG = logging.getLogger("mlx_gen.server")


@dataclass(frozen=True)
class ChoiceSpec:
    """What one choice generates: its prompt, settings and prompt-logprob request."""

    prompt_ids: list[int]
    settings: GenerationSettings
    prompt_logprobs: int | None = None


class ClientGone(Exception):
    """The client disconnected before the answer was complete."""


class RequestRun:
    """The jobs of one request, submitted on creation.

    Args:
        worker: The generation worker.
        specs: One entry per choice, in choice order.
        max_unread_events: Events that may wait unread before the request is cancelled.

    Raises:
        ApiError: 429 when the worker's queue is full, 503 while it shuts down.
    """

    def __init__(
        self, worker: Worker, specs: list[ChoiceSpec], max_unread_events: int = MAX_UNREAD_EVENTS
    ) -> None:
        loop = asyncio.get_running_loop()
        self.worker, self.max_unread_events = worker, max_unread_events
        self.queue: asyncio.Queue = asyncio.Queue()
        self.unread, self.overflowed = 0, False
        self._count = threading.Lock()  # ``unread`` is raised by the worker thread
        self.jobs = [
            Job(s.prompt_ids, s.settings, self._emitter(loop, i), s.prompt_logprobs, held=True)
            for i, s in enumerate(specs)
        ]
        self.open = set(range(len(self.jobs)))
        self._early: list[tuple[int, Any]] = []
        # Closed when collected too (a stream whose response never started).
        self._closer = weakref.finalize(self, _close, worker, self.jobs)
        try:
            worker.submit(self.jobs)
        except QueueFull as err:
            raise ApiError(
                429, f"the server is busy: {err}; retry later", code="queue_full"
            ) from err
        except ShuttingDown as err:
            raise ApiError(503, str(err), code="shutting_down") from err

    def _emitter(self, loop: asyncio.AbstractEventLoop, index: int) -> Any:
        def emit(event: Any) -> None:
            if not isinstance(event, (Done, Failed)):  # An ending always gets through.
                with self._count:
                    if self.overflowed:
                        return
                    if self.unread >= self.max_unread_events:
                        self.overflowed = True
                        loop.call_soon_threadsafe(self._overflow)
                        return
                    self.unread += 1
            loop.call_soon_threadsafe(self.queue.put_nowait, (index, event))

        return emit

    def _overflow(self) -> None:
        """Too many unread events: cancel every choice, each ending with a 503 event."""
        message = (
            f"cancelled: the client left {self.max_unread_events} events unread "
            "(--max-unread-events)"
        )
        LOG.warning("a streaming request was %s", message)
        for index in sorted(self.open):
            self.queue.put_nowait((index, Failed(message, 503)))
            self.worker.cancel(self.jobs[index])  # ``open`` shrinks as the handler reads

    async def _take(self) -> tuple[int, Any]:
        index, event = await self.queue.get()
        if not isinstance(event, (Done, Failed)):
            with self._count:
                self.unread -= 1
        return index, event

    async def admitted(self) -> None:
        """Wait until the worker has resolved every choice's settings.

        Raises:
            ApiError: 400 naming what was invalid (the other choices are cancelled).
        """
        waiting = set(self.open)
        while waiting:
            index, event = await self._take()
            if isinstance(event, Failed) and index in waiting:
                self.open.discard(index)
                self.close()
                raise ApiError(event.status, event.message)
            if isinstance(event, Admitted):
                waiting.discard(index)
            else:
                self._early.append((index, event))
            if isinstance(event, (Done, Failed)):
                self.open.discard(index)
                waiting.discard(index)

    async def events(self, request: Request | None = None) -> AsyncIterator[tuple[int, Any]]:
        """``(choice, event)`` until every choice has ended (``Done``/``Failed`` included).

        With ``request``, the client's connection is checked while waiting and
        :class:`ClientGone` raised when it has gone.
        """
        early, self._early = self._early, []
        for item in early:
            yield item
        while self.open:
            if request is None:
                index, event = await self._take()
            else:
                try:
                    index, event = await asyncio.wait_for(self._take(), POLL_SECONDS)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        raise ClientGone() from None
                    continue
            if index not in self.open:  # Ended already (a cancelled choice's late Done).
                continue
            if isinstance(event, (Done, Failed)):
                self.open.discard(index)
            if not isinstance(event, Admitted):
                yield index, event

    def cached_tokens(self, choices_per_prompt: int = 1) -> int:
        """Prompt tokens served from the prefix cache, each prompt counted once (its first
        choice's), as ``usage.prompt_tokens_details.cached_tokens`` reports them."""
        return sum(job.cached_tokens for job in self.jobs[::choices_per_prompt])

    def cancel(self) -> None:
        """Cancel every choice that has not ended."""
        for index in self.open:
            self.worker.cancel(self.jobs[index])
        self.open = set()

    def close(self) -> None:
        """The answer was sent or abandoned: cancel what runs, free the queue places."""
        self.cancel()
        self._closer()


def _close(worker: Worker, jobs: list[Job]) -> None:
    """Cancel ``jobs`` (those still running leave the batch) and release their places."""
    for job in jobs:
        if not job.finished:
            worker.cancel(job)
    worker.release(jobs)
