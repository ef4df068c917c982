"""mlx_gen's controls on the Anthropic and Responses surfaces, and their chat request.

Those surfaces accept mlx_gen's controls as extra body fields named as on the chat
endpoint (``seed``, ``min_p``, ``response_format``, ...: :data:`EXTENSIONS`); they go
into the chat request unchanged and are checked there. Other unknown fields are ignored,
or refused with ``--strict``; fields a surface accepts and ignores are listed per surface
with the reason.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from mlx_gen.server.errors import ApiError
from mlx_gen.server.schemas import ChatRequest

#: Chat-endpoint fields accepted as extra body fields by ``/v1/messages`` and ``/v1/responses``.
EXTENSIONS = (
    "seed",
    "top_k",
    "min_p",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "min_tokens",
    "suppress_tokens",
    "begin_suppress_tokens",
    "bad_words",
    "ignore_eos",
    "include_stop_str_in_output",
    "response_format",
    "chat_template_kwargs",
    "tool_format",
    "thinking_budget",  # the surface's own thinking field, when sent, wins
    "return_token_ids",  # non-streamed answers get a top-level ``token_ids``
    "speculative",  # mlx_gen.server.speculation
    "logprobs",  # /v1/messages: the chat entries (Responses has its own top_logprobs)
    "top_logprobs",
    "logprobs_mode",
    "logprob_token_ids",
)


def extensions(extra: dict[str, Any] | None, *, strict: bool, ignored: dict[str, str]) -> dict:
    """The extension fields among ``extra`` (the request's unknown fields).

    Args:
        extra: The fields the surface's request model does not declare.
        strict: Refuse any other field (``--strict``).
        ignored: Fields the surface accepts and ignores (name → reason).

    Raises:
        ApiError: 400 naming an unknown field under ``strict``.
    """
    out, unknown = {}, []
    for name, value in (extra or {}).items():
        if name in EXTENSIONS:
            out[name] = value
        elif name not in ignored:
            unknown.append(name)
    if strict and unknown:
        raise ApiError(
            400,
            f"unknown field(s) {json.dumps(unknown)} (the server runs with --strict)",
            param=unknown[0],
        )
    return out


def chat_request(body: dict[str, Any], rename: dict[str, str]) -> ChatRequest:
    """Validate a mapped chat body; a 400 names the surface's field (``rename``: chat → its).

    Raises:
        ApiError: 400 naming the invalid field and what is valid.
    """
    try:
        return ChatRequest.model_validate(body)
    except ValidationError as err:
        parts, param = [], None
        for item in err.errors():
            loc = [str(p) for p in item.get("loc", ())]
            if loc and loc[0] in rename:
                loc[0] = rename[loc[0]]
            name = ".".join(loc) or "body"
            param = param or name
            parts.append(f"{name}: {item.get('msg')} (got {item.get('input')!r})")
        raise ApiError(400, "invalid request: " + "; ".join(parts), param=param) from None


def renamed(err: ApiError, rename: dict[str, str]) -> ApiError:
    """``err`` from the chat path, naming the surface's field (``rename``: chat → its).

    >>> renamed(ApiError(400, "max_tokens=9 is too many", param="max_tokens"),
    ...         {"max_tokens": "max_output_tokens"}).message
    'max_output_tokens=9 is too many'
    """
    if err.param not in rename:
        return err
    name = rename[err.param]
    message = err.message
    if message.startswith(err.param):
        message = name + message[len(err.param) :]
    return ApiError(err.status, message, param=name, code=err.code)
