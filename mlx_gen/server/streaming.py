"""Server-sent events, ids, and OpenAI's finish reasons (shared by both endpoints).

``finish_reason`` is ``"length"`` when ``max_tokens`` was reached, ``"constraint"``
when the structured-output constraint ended generation before its output was
complete (nothing allowed, or llguidance failed: the text is then a valid prefix,
never a valid answer), and ``"stop"`` otherwise; the extension ``stop_reason`` says
what matched: the EOS id, the stop string, the engine's reason name for other endings
(``"criterion"``, ``"no_allowed_token"``), or, for ``"constraint"``, why it ended.
"""

from __future__ import annotations

import json
import time
import uuid

from fastapi.responses import Response
from pydantic import BaseModel

from mlx_gen.server.errors import error_body
from mlx_gen.stream import GenerationChunk

DONE = "data: [DONE]\n\n"


def sse(payload: BaseModel | dict) -> str:
    """One ``data:`` event."""
    if isinstance(payload, BaseModel):
        return f"data: {payload.model_dump_json()}\n\n"
    return f"data: {json.dumps(payload)}\n\n"


def json_response(build: object, *args: object) -> Response:
    """``build(*args)`` (a pydantic model) serialized as a JSON response.

    A large answer (``n`` choices with logprobs, 200k token ids) takes a while to build
    and serialize: call this through ``run_in_threadpool``, off the event loop.
    """
    return Response(build(*args).model_dump_json(), media_type="application/json")


def sse_error(status: int, message: str) -> str:
    """An error event in OpenAI's shape (the stream then ends with ``[DONE]``)."""
    return sse(error_body(status, message))


def new_id(prefix: str) -> str:
    """A fresh response id such as ``chatcmpl-3f2a...``."""
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    """Unix seconds."""
    return int(time.time())


def finish_fields(chunk: GenerationChunk | None) -> tuple[str, int | str | None]:
    """``(finish_reason, stop_reason)`` of a last chunk (``None``: nothing was generated)."""
    if chunk is None or chunk.finish_reason in (None, "length"):
        return "length", None
    if chunk.finish_reason in ("stop", "stop_string"):
        return "stop", chunk.matched
    if chunk.finish_reason == "constraint":  # not "stop": the output is not a valid answer
        return "constraint", chunk.finish_message
    return "stop", chunk.finish_reason
