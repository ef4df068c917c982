"""The first thing a request meets: the API key, then the body limit (pure ASGI).

It runs before FastAPI reads or parses anything, so a wrong key costs no memory: the
key is checked on the headers alone (401, the body is never read). A body is then read
as it arrives and counted: a ``Content-Length`` over the limit is refused at once, and a
body without one (chunked) is refused as soon as its bytes pass the limit (413); at
most ``max_body_bytes`` are ever held. A body must arrive whole within ``body_timeout``
seconds (else 408: a client trickling bytes holds no connection for long). The app then
reads the body from memory.
``/health`` needs no key (a load balancer's probe).
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

from fastapi.responses import JSONResponse

from mlx_gen.server.errors import error_body

#: Paths served without the API key.
PUBLIC = frozenset({"/health"})
_TOO_LARGE = "request_too_large"


class RequestGuard:
    """ASGI middleware: the API key from the headers, then the bounded body.

    Args:
        app: The ASGI app it guards.
        api_key: Require ``Authorization: Bearer <api_key>`` (``None``: no key).
        max_body_bytes: The most body bytes one request may send (then 413).
        body_timeout: Seconds the whole body may take to arrive (then 408).
    """

    def __init__(
        self, app: Any, *, api_key: str | None, max_body_bytes: int, body_timeout: float = 60.0
    ) -> None:
        self.app, self.api_key, self.max_body_bytes = app, api_key, max_body_bytes
        self.key_bytes = bytes(api_key, "utf-8") if api_key is not None else b""
        self.body_timeout = body_timeout

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        """Check the key, read the body up to the limit, then run the app on it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", ())}
        if self.api_key is not None and scope["path"] not in PUBLIC:
            if not self._authorized(headers):
                message = (
                    "missing or wrong API key: send 'Authorization: Bearer <key>' or "
                    "'x-api-key: <key>'"
                )
                await _refuse(scope, receive, send, 401, message, "invalid_api_key")
                return
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await _refuse(scope, receive, send, 413, self._too_large(int(declared)), _TOO_LARGE)
            return
        try:
            body = await asyncio.wait_for(self._read_body(receive), self.body_timeout)
        except asyncio.TimeoutError:
            message = f"the request body did not arrive within {self.body_timeout:g} s"
            await _refuse(scope, receive, send, 408, message + " (--body-timeout)", "timeout")
            return
        if body is None:  # The client went away.
            return
        if isinstance(body, int):
            message = self._too_large(body, at_least=True)
            await _refuse(scope, receive, send, 413, message, _TOO_LARGE)
            return
        await self.app(scope, _replay(body, receive), send)

    def _authorized(self, headers: dict[str, bytes]) -> bool:
        """A bearer token, or Anthropic clients' ``x-api-key``, equal to the key."""
        header = headers.get("authorization", b"")
        token = header[7:] if header[:7].lower() == b"bearer " else b""
        token = token or headers.get("x-api-key", b"")
        return hmac.compare_digest(token, self.key_bytes)

    async def _read_body(self, receive: Any) -> bytes | int | None:
        """The body; the byte count once it passes the limit; ``None`` on disconnect."""
        parts, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return size
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)

    def _too_large(self, size: int, *, at_least: bool = False) -> str:
        got = f"at least {size}" if at_least else str(size)
        return (
            f"the request body has {got} bytes, more than the server's limit "
            f"({self.max_body_bytes} bytes, --max-body-bytes)"
        )


def _replay(body: bytes, receive: Any) -> Any:
    """A ``receive`` that gives ``body`` once, then what the client sends (a disconnect)."""
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _refuse(
    scope: dict, receive: Any, send: Any, status: int, message: str, code: str | None = None
) -> None:
    """Answer ``status`` in OpenAI's error shape and close (the body is left unread)."""
    response = JSONResponse(
        error_body(status, message, code=code), status, headers={"connection": "close"}
    )
    await response(scope, receive, send)
