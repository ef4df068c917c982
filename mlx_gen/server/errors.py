"""OpenAI's error shape, and turning every failure into it.

Every error answers ``{"error": {"message", "type", "param", "code"}}``: 400 for an
invalid value (FastAPI's 422 and malformed JSON included), 401 for a missing or wrong
key, 404 for an unknown model or route, 408 for a body that arrives too slowly, 413
for a body over the limit, 429 when the queue is full, 503 while shutting down (and
over the connection limit, from :mod:`.connections`). An unexpected exception gives a
500 in the same shape, never a traceback.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

LOG = logging.getLogger("mlx_gen.server")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "invalid_request_error",
    429: "rate_limit_exceeded",
    500: "server_error",
    503: "service_unavailable",
}


class ApiError(Exception):
    """An error answered to the client in OpenAI's shape.

    Args:
        status: The HTTP status.
        message: What was wrong and what would be valid.
        param: The request field at fault (``None`` when no single field is).
        code: A short machine-readable code.
    """

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def error_body(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> dict:
    """The JSON body of an error response."""
    kind = _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(err: ApiError) -> JSONResponse:
    """``err`` as a JSON response."""
    return JSONResponse(error_body(err.status, err.message, err.param, err.code), err.status)


def _validation_message(err: RequestValidationError) -> tuple[str, str | None]:
    """One line naming each bad field and what is valid; the first field as ``param``."""
    parts, param = [], None
    for item in err.errors():
        loc = [str(p) for p in item.get("loc", ()) if p != "body"]
        if item.get("type") == "json_invalid":
            return f"the request body is not valid JSON: {item.get('msg')}", None
        field = ".".join(p for p in loc if not _union_tag(p)) or "body"
        param = param or field
        parts.append(f"{field}: {item.get('msg')} (got {_short(item.get('input'))})")
    return "invalid request: " + "; ".join(parts), param


def _union_tag(part: str) -> bool:
    """A location part that names a union member (``list[int]``, ``str``), not a field."""
    return "[" in part or part in ("str", "int", "float", "bool", "dict", "list")


def _short(value: object, limit: int = 120) -> str:
    """``repr(value)``, cut to ``limit`` characters (a 10 MB prompt is not echoed back)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception through OpenAI's error shape (422 becomes 400)."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError) -> JSONResponse:
        return error_response(err)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(err)
        return JSONResponse(error_body(400, message, param, "invalid_value"), 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        status = err.status_code
        message = str(err.detail)
        if status == 404:
            message = f"no route {request.method} {request.url.path}"
        return JSONResponse(error_body(status, message), status)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception) -> JSONResponse:
        LOG.exception("unexpected error on %s", request.url.path)
        return JSONResponse(error_body(500, f"internal error: {type(err).__name__}: {err}"), 500)
