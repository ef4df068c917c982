"""Slow and idle clients: a connection cap, a header deadline, and the descriptor limit.

uvicorn never times out a request whose headers are still arriving, and each open
connection holds a file descriptor, so idle clients could take every descriptor (mlx-lm
sets the soft limit to 2,048 when imported). :class:`GuardedH11Protocol` is uvicorn's
h11 protocol with two guards:

- at most ``max_connections`` connections are open: one more is answered ``503`` (in
  OpenAI's error shape) and closed at once, so its descriptor is freed;
- a connection must send a whole request head (request line and headers, at most
  h11's 16 KiB) within ``header_timeout`` seconds of opening or of its last response,
  else it is closed.

An idle keep-alive connection is closed after uvicorn's ``timeout_keep_alive``, and
:func:`raise_descriptor_limit` lifts the soft ``RLIMIT_NOFILE`` to the hard limit.
For a host reachable from outside, put a reverse proxy in front (see the README).
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from mlx_gen.server.errors import error_body

LOG = logging.getLogger("mlx_gen.server")

#: Descriptors kept free for the model files, logs and the listening socket.
SPARE_DESCRIPTORS = 256


def raise_descriptor_limit() -> int:
    """Lift the soft ``RLIMIT_NOFILE`` to the hard limit where allowed; the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def _busy_response(max_connections: int) -> bytes:
    message = (
        f"the server has {max_connections} open connections, its limit "
        "(--max-connections); retry later"
    )
    body = json.dumps(error_body(503, message, code="too_many_connections")).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
        f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def guarded_protocol(*, max_connections: int, header_timeout: float) -> type[H11Protocol]:
    """:class:`GuardedH11Protocol` with these limits (uvicorn's ``http=`` option)."""
    if max_connections < 1 or not header_timeout > 0:
        raise ValueError(
            f"max_connections={max_connections!r} and header_timeout={header_timeout!r} "
            "are invalid (expected >= 1 and > 0)"
        )
    busy = _busy_response(max_connections)
    limits = {"max_connections": max_connections, "header_timeout": header_timeout, "busy": busy}
    return type("GuardedH11Protocol", (GuardedH11Protocol,), limits)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a connection cap and a request-head deadline.

    Use :func:`guarded_protocol` to set ``max_connections`` and ``header_timeout``.
    """

    max_connections: int = 2048
    header_timeout: float = 10.0
    busy: bytes = b""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._refused = False
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Refuse the connection over the cap (503, closed); else arm the head deadline."""
        if len(self.connections) >= self.max_connections:
            self._refused = True
            transport.write(self.busy)
            transport.close()
            return
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        """Ignore what a refused connection sends; else parse as uvicorn does."""
        if not self._refused:
            super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        """Drop the deadline; a refused connection has nothing else to clean."""
        if self._deadline is not None:
            self._deadline.cancel()
        if not self._refused:
            super().connection_lost(exc)

    def on_response_complete(self) -> None:
        """A response went out: the next request's head has ``header_timeout`` again."""
        super().on_response_complete()
        self._arm()

    def _arm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(self.header_timeout, self._expire, self.cycle)

    def _expire(self, cycle: Any) -> None:
        """Close when no request head arrived since arming (no new cycle, none running)."""
        idle = self.cycle is cycle and (cycle is None or cycle.response_complete)
        if idle and not self.transport.is_closing():
            LOG.debug("closing a connection: no request head within %ss", self.header_timeout)
            self.transport.close()
