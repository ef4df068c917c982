"""Pydantic models of the requests: OpenAI's fields plus mlx_gen's extensions.

Types and ranges are checked here (a violation is a 400 naming the field); what needs
the model (ids inside the vocabulary, the context length) is checked in
:mod:`.settings_map`. Types are strict, as the CLI and the API are: ``"3"`` or ``true``
is not an int, ``"0.5"`` not a number (an int is a number). Numbers must be finite:
``NaN`` and ``±Infinity`` (which Python's JSON parser accepts) are refused. Text must be
valid Unicode (a lone surrogate such as ``"\\ud800"`` is refused). Unknown fields are
kept (``model_extra``) so that ``--strict`` can refuse them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, FailFast, Field

from mlx_gen.server.speculation import SpeculativeField


def _unicode(value: str) -> str:
    """``value`` if it is valid Unicode (encodable as UTF-8: no lone surrogate)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        bad = f"U+{ord(value[err.start]):04X}"
        where = f"a lone surrogate ({bad}) at index {err.start}"
        raise ValueError(f"not valid Unicode: {where}") from None
    return value


#: Request text: any ``str`` that is valid Unicode.
Text = Annotated[str, AfterValidator(_unicode)]


class FailFastItems(FailFast):
    """pydantic's ``FailFast``: a list stops validating at its first bad item.

    Hashable, since ``X | None`` hashes its members' annotations.
    """

    def __hash__(self) -> int:
        return hash(FailFast)


#: Token ids. Long lists stop at their first bad item (``FailFast``): validation holds the
#: GIL, and one error per item of a 7 MB ``[true, true, ...]`` took 12 s of it.
Ids = Annotated[list[int], FailFastItems()]
#: The most messages one request may hold (each costs template tokens: no context fits
#: more); checked before the messages are validated.
MAX_MESSAGES = 16384


def few_messages(value: object) -> object:
    """``value``, unless it is a list of more than :data:`MAX_MESSAGES` items."""
    if isinstance(value, list) and len(value) > MAX_MESSAGES:
        raise ValueError(f"{len(value)} messages, more than the limit of {MAX_MESSAGES}")
    return value


def message_list(item: Any) -> Any:
    """``list[item]`` bounded as every surface's messages are: at most
    :data:`MAX_MESSAGES`, counted before any item is validated (:func:`few_messages`),
    and validation ends at the first bad item (:class:`FailFastItems`)."""
    return Annotated[list[item], FailFastItems(), BeforeValidator(few_messages)]


Messages = Annotated[message_list("Message"), Field(min_length=1)]


class _Open(BaseModel):
    model_config = ConfigDict(
        extra="allow", populate_by_name=True, strict=True, allow_inf_nan=False
    )


class StreamOptions(_Open):
    """``stream_options``: ``include_usage`` adds a last chunk with usage and no choices."""

    include_usage: bool = False


class JsonSchemaSpec(_Open):
    """``response_format.json_schema``."""

    name: str = "response"
    description: str | None = None
    schema_: dict | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Open):
    """``response_format``: ``text``, ``json_object`` or ``json_schema``."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None


class SamplingRequest(_Open):
    """Fields shared by chat and completions requests (OpenAI's, then extensions)."""

    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=0)
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: int = Field(default=1, ge=1)
    stop: Text | list[Text] | None = None
    seed: int | None = Field(default=None, ge=0, lt=2**64)
    logit_bias: dict[str, float] | None = None
    presence_penalty: float = Field(default=0.0, ge=-2, le=2)
    frequency_penalty: float = Field(default=0.0, ge=-2, le=2)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # Extensions (vLLM's names), sent by the openai client through ``extra_body``.
    top_k: int | None = Field(default=None, ge=-1)
    min_p: float | None = Field(default=None, ge=0, le=1)
    repetition_penalty: float | None = Field(default=None, gt=0)
    min_tokens: int | None = Field(default=None, ge=0)
    suppress_tokens: Ids | None = None
    begin_suppress_tokens: Ids | None = None
    bad_words: list[Text] | None = None
    logprobs_mode: Literal["raw", "processed", "both"] = "raw"
    logprob_token_ids: Ids | None = None
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False
    return_token_ids: bool = False
    speculative: SpeculativeField = None  # mlx_gen.server.speculation


class ContentPart(_Open):
    """One part of a message's content; only ``text`` parts are supported."""

    type: str
    text: Text | None = None


class Message(_Open):
    """One chat message."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[dict] | None = Field(default=None, max_length=128)
    tool_call_id: str | None = Field(default=None, max_length=256)
    reasoning_content: str | None = None


class ChatRequest(SamplingRequest):
    """``POST /v1/chat/completions``."""

    messages: Messages
    max_completion_tokens: int | None = Field(default=None, ge=0)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[dict] | None = Field(default=None, max_length=128)
    tool_choice: str | dict | None = None
    parallel_tool_calls: bool = True
    chat_template_kwargs: dict | None = None
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None
    thinking_budget: int | None = Field(default=None, ge=0, le=2**31 - 1)  # an extension
    tool_format: str | None = None  # an extension: override the detected call syntax


class CompletionRequest(SamplingRequest):
    """``POST /v1/completions``."""

    # Token ids first: strict members are disjoint, and a long id list then matches at once
    # instead of first failing as list[Text] with one error per id.
    prompt: (
        Ids | Annotated[list[Ids], FailFastItems()] | Text | Annotated[list[Text], FailFastItems()]
    )
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=20)
    best_of: int | None = Field(default=None, ge=1)
    suffix: str | None = None
    response_format: ResponseFormat | None = None


class TokenizeRequest(_Open):
    """``POST /tokenize`` (vLLM's shape): a ``prompt`` or chat ``messages``."""

    model: str | None = None
    prompt: Text | None = None
    messages: Messages | None = None
    add_special_tokens: bool = True
    add_generation_prompt: bool = True
    return_token_strs: bool = False


class DetokenizeRequest(_Open):
    """``POST /detokenize`` (vLLM's shape)."""

    model: str | None = None
    tokens: Ids
