"""Pydantic models of the responses, in OpenAI's shapes plus mlx_gen's extension fields.

Extension fields (all optional, ignored by OpenAI clients): ``stop_reason`` on a choice
(the EOS id or stop string that matched, vLLM's name), ``token_ids`` (with
``return_token_ids``), and in a logprob entry ``id``, ``rank``, ``token_id_logprobs``
(``logprob_token_ids``) and ``processed`` (``logprobs_mode: "both"``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class TopLogprob(BaseModel):
    """One alternative: its text, natural-log probability and UTF-8 bytes."""

    token: str
    logprob: float
    bytes: list[int] | None = None
    id: int | None = None


class ProcessedLogprob(BaseModel):
    """The same token under the processed distribution (``logprobs_mode: "both"``)."""

    logprob: float
    rank: int
    top_logprobs: list[TopLogprob]


class LogprobEntry(TopLogprob):
    """A generated token: its logprob, rank and the top alternatives, highest first."""

    rank: int | None = None
    top_logprobs: list[TopLogprob]
    token_id_logprobs: dict[str, float] | None = None
    processed: ProcessedLogprob | None = None


class ChoiceLogprobs(BaseModel):
    """A chat choice's ``logprobs``."""

    content: list[LogprobEntry] | None
    refusal: list[LogprobEntry] | None = None


class PromptTokensDetails(BaseModel):
    """``usage.prompt_tokens_details``: prompt tokens served from the prefix cache."""

    cached_tokens: int = 0


class Usage(BaseModel):
    """Token counts (each prompt counted once whatever ``n``)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails = PromptTokensDetails()


class ChatMessage(BaseModel):
    """The assistant's answer."""

    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[dict] | None = None
    reasoning: str | None = None
    reasoning_content: str | None = None  # the alias other servers use


class ChatChoice(BaseModel):
    """One chat choice."""

    index: int
    message: ChatMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None
    stop_reason: int | str | None = None
    token_ids: list[int] | None = None


class ChatCompletion(BaseModel):
    """``chat.completion``."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None


class Delta(BaseModel):
    """A streamed piece of the answer."""

    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[dict] | None = None
    reasoning: str | None = None
    reasoning_content: str | None = None


class ChunkChoice(BaseModel):
    """One choice's piece in a streamed chunk."""

    index: int
    delta: Delta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    token_ids: list[int] | None = None


class ChatCompletionChunk(BaseModel):
    """``chat.completion.chunk``."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class LegacyLogprobs(BaseModel):
    """``/v1/completions`` logprobs: per token its text, logprob, top entries, offset."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]
    token_id_logprobs: list[dict[str, float] | None] | None = None  # logprob_token_ids


class CompletionChoice(BaseModel):
    """One completion choice (also a streamed piece)."""

    index: int
    text: str
    logprobs: LegacyLogprobs | None = None
    finish_reason: str | None
    stop_reason: int | str | None = None
    token_ids: list[int] | None = None
    prompt_token_ids: list[int] | None = None


class Completion(BaseModel):
    """``text_completion`` (streamed chunks share the shape)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class ModelCard(BaseModel):
    """One served model."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "mlx_gen"
    max_model_len: int | None = None
    context_length: int | None = None
    vocab_size: int | None = None
    capabilities: dict[str, bool | str | None] | None = None


class ModelList(BaseModel):
    """``GET /v1/models``."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class TokenizeResponse(BaseModel):
    """``POST /tokenize`` (vLLM's shape)."""

    count: int
    max_model_len: int | None
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeResponse(BaseModel):
    """``POST /detokenize`` (vLLM's shape)."""

    prompt: str


class TokenizerInfo(BaseModel):
    """``GET /tokenizer_info`` (vLLM's shape)."""

    tokenizer_class: str
    eos_token: str | None
    bos_token: str | None
    pad_token: str | None
    unk_token: str | None
    chat_template: str | None
    model_max_length: int | None
    vocab_size: int
    eos_token_ids: list[int]
