"""Anthropic's error shape on the ``/v1/messages`` routes.

Every error answered on a path under ``/v1/messages`` (a 400 for an invalid body, the
401 of the API-key check, a 404, 413, 429, 503) is rewritten from OpenAI's shape into
``{"type": "error", "error": {"type": ..., "message": ...}}``, whichever layer raised it,
by :class:`AnthropicErrors` (an ASGI middleware), which also answers an unexpected
exception with a 500 ``api_error`` (logged, never a traceback). Streams are not touched (they start
with a 200; a failure mid-stream is an ``error`` event).
"""

from __future__ import annotations

import json
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

PREFIX = "/v1/messages"
LOG = logging.getLogger("mlx_gen.server")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


def anthropic_error(status: int, message: str) -> dict:
    """The ``error`` member of Anthropic's error body for ``status``."""
    kind = _TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    return {"error": {"type": kind, "message": message}}


def anthropic_body(status: int, body: bytes) -> bytes:
    """An error body in OpenAI's shape (or any text) rewritten into Anthropic's."""
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = body.decode("utf-8", "replace")
    return json.dumps({"type": "error", **anthropic_error(status, message)}).encode()


class AnthropicErrors:
    """ASGI middleware: error responses under :data:`PREFIX` in Anthropic's shape."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass everything through; buffer and rewrite an error response on our paths."""
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        started_ok = False
        body = b""

        async def wrapped(message: Message) -> None:
            nonlocal start, body, started_ok
            if message["type"] == "http.response.start" and message["status"] >= 400:
                start = message
                return
            if start is None:
                started_ok = True
                await send(message)
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                new = anthropic_body(start["status"], body)
                headers = [
                    (k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"
                ]
                headers.append((b"content-length", str(len(new)).encode()))
                await send({**start, "headers": headers})
                await send({"type": "http.response.body", "body": new})

        try:
            await self.app(scope, receive, wrapped)
        except Exception as err:
            if start is not None or started_ok:
                raise
            LOG.exception("unexpected error on %s", scope["path"])
            body = json.dumps(
                {"type": "error", **anthropic_error(500, f"internal error: {type(err).__name__}")}
            ).encode()
            headers = [(b"content-type", b"application/json"),
                       (b"content-length", str(len(body)).encode())]  # fmt: skip
            await send({"type": "http.response.start", "status": 500, "headers": headers})
            await send({"type": "http.response.body", "body": body})
