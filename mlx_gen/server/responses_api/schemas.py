"""Pydantic model of a ``POST /v1/responses`` body (stateless: nothing is stored).

Input items stay dicts: :mod:`.mapping` checks each item's type and names the bad one.
Unknown fields are kept (``model_extra``): mlx_gen's extensions or, with ``--strict``, a 400.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from mlx_gen.server.schemas import message_list

#: Fields accepted and ignored, with the reason (the README's table says the same).
IGNORED = {
    "metadata": "nothing is stored",
    "user": "nothing is tracked per user",
    "safety_identifier": "nothing is tracked per user",
    "service_tier": "one local model, one tier",
    "prompt_cache_key": "the prompt cache needs no key",
    "truncation": "nothing is truncated: a prompt beyond the context is a 400",
    "stream_options": "no options apply to this stream",
}

#: Input items, bounded as chat's messages are.
InputItems = message_list(dict)


class ResponsesRequest(BaseModel):
    """``POST /v1/responses``."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    # Items are counted before any is validated (at most MAX_MESSAGES, as chat's messages:
    # 320k items held the event loop for 1.3 s), and the first bad one ends validation.
    input: str | InputItems
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=0)
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    tools: list[dict] | None = None
    tool_choice: str | dict | None = None
    parallel_tool_calls: bool | None = None
    text: dict | None = None
    reasoning: dict | None = None
    stream: bool = False
    store: bool | None = None
    previous_response_id: str | None = None
    background: bool | None = None
    conversation: str | dict | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    include: list[str] | None = None
