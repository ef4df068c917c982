"""The async side of a request: submit its jobs to the worker and await their events.

The worker thread hands each event to the request's event loop
(``call_soon_threadsafe``); the handler reads ``(choice, event)`` pairs until every
choice has ended. When the client goes away (the streaming response is cancelled, or a
non-streaming request sees the disconnect), the unfinished jobs are cancelled and leave
the batch at the next step.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from mlx_gen.server.errors import ApiError
from mlx_gen.server.worker import Admitted, Done, Failed, Job, QueueFull, ShuttingDown, Worker
from mlx_gen.settings import GenerationSettings

POLL_SECONDS = 0.5


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

    Raises:
        ApiError: 429 when the worker's queue is full, 503 while it shuts down.
    """

    def __init__(self, worker: Worker, specs: list[ChoiceSpec]) -> None:
        loop = asyncio.get_running_loop()
        self.worker = worker
        self.queue: asyncio.Queue = asyncio.Queue()
        self.jobs = [
            Job(s.prompt_ids, s.settings, self._emitter(loop, i), s.prompt_logprobs)
            for i, s in enumerate(specs)
        ]
        self.open = set(range(len(self.jobs)))
        self._early: list[tuple[int, Any]] = []
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
            loop.call_soon_threadsafe(self.queue.put_nowait, (index, event))

        return emit

    async def admitted(self) -> None:
        """Wait until the worker has resolved every choice's settings.

        Raises:
            ApiError: 400 naming what was invalid (the other choices are cancelled).
        """
        waiting = set(self.open)
        while waiting:
            index, event = await self.queue.get()
            if isinstance(event, Failed) and index in waiting:
                self.open.discard(index)
                self.cancel()
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
                index, event = await self.queue.get()
            else:
                try:
                    index, event = await asyncio.wait_for(self.queue.get(), POLL_SECONDS)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        raise ClientGone() from None
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
