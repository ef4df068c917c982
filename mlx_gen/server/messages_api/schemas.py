"""Pydantic models of Anthropic's ``/v1/messages`` and ``/v1/messages/count_tokens`` bodies.

Ranges are checked here (a violation is a 400 naming the field). Content blocks stay
dicts: :mod:`.mapping` checks each block's type and names the bad one. Unknown fields are
kept (``model_extra``): mlx_gen's extensions (:data:`~mlx_gen.server.extensions.EXTENSIONS`)
or, with ``--strict``, a 400.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from mlx_gen.server.schemas import message_list

#: Anthropic fields accepted and ignored, with the reason (the README's table says the same).
IGNORED = {
    "metadata": "nothing is tracked per user",
    "service_tier": "one local model, one tier",
    "container": "no code-execution containers",
    "mcp_servers": "no MCP connector: tools run on the client",
    "context_management": "the context is never edited by the server",
    "cache_control": "the prefix cache needs no markers",
    "inference_geo": "one local machine",
    "speed": "one local model, one speed",
    "diagnostics": "no diagnostics are produced",
    "user_profile_id": "nothing is tracked per user",
    "workspace_id": "no workspaces",
}


class AnthropicMessage(BaseModel):
    """One turn: a string or a list of content blocks (``text``, ``tool_use``, ...)."""

    model_config = ConfigDict(extra="allow")

    role: Literal["user", "assistant"]
    content: str | list[dict]


#: A request's turns, bounded as chat's messages are.
AnthropicMessages = message_list(AnthropicMessage)


class CountTokensRequest(BaseModel):
    """``POST /v1/messages/count_tokens``: what a message request would prompt with."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    system: str | list[dict] | None = None
    # At most MAX_MESSAGES, counted before any is validated (validation holds the GIL:
    # 320k messages froze /health for 3.4 s), and the first bad one ends validation.
    messages: Annotated[AnthropicMessages, Field(min_length=1)]
    tools: list[dict] | None = None
    tool_choice: dict | None = None
    thinking: dict | None = None
    output_config: dict | None = None


class MessagesRequest(CountTokensRequest):
    """``POST /v1/messages``.

    ``temperature``, ``top_p`` and ``top_k`` are Anthropic's fields (the SDK sends them
    through ``extra_body`` since it dropped them); ``temperature`` above 1 is accepted.
    """

    max_tokens: int = Field(ge=0)
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    stream: bool = False
