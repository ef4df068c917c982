"""Turn what the caller gives (text, token ids or chat messages) into prompt ids."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mlx_gen.validation import check_prompt_type, check_text

Prompt = str | Sequence[int]
Messages = Sequence[Mapping[str, Any]]


def encode_prompt(
    tokenizer: Any,
    prompt: Prompt | None = None,
    *,
    messages: Messages | None = None,
    add_special_tokens: bool = True,
) -> list[int]:
    """Token ids for a prompt.

    Args:
        tokenizer: The model's tokenizer.
        prompt: Text (encoded with the tokenizer's special tokens, e.g. BOS, unless
            ``add_special_tokens`` is false) or ids (used as they are; the engine checks
            them against the vocabulary, see :mod:`mlx_gen.validation`).
        messages: Chat messages (``[{"role": ..., "content": ...}]``) rendered with the
            tokenizer's chat template and an assistant generation prompt.
        add_special_tokens: Add BOS and the like when encoding text.

    Raises:
        ValueError: Neither or both of ``prompt`` and ``messages``; an empty prompt; a
            chat without a chat template; a malformed message (see :func:`check_messages`).
    """
    if (prompt is None) == (messages is None):
        raise ValueError("pass exactly one of prompt= or messages=")
    if messages is not None:
        check_messages(messages)
        if not getattr(tokenizer, "chat_template", None) and not getattr(
            tokenizer, "has_chat_template", False
        ):
            raise ValueError(
                "messages= needs a chat template, and this tokenizer has none; pass prompt= instead"
            )
        ids = tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=True, tokenize=True
        )
    elif isinstance(prompt, str):
        check_text(prompt)
        ids = tokenizer.encode(prompt, add_special_tokens=add_special_tokens)
    else:
        check_prompt_type(prompt)
        ids = list(prompt)  # Not int(): 2.5 or "3" must be refused, not rounded.
    if not ids:
        raise ValueError("the prompt is empty: pass at least one token or character")
    return list(ids)


def check_messages(messages: Messages) -> None:
    """Check chat messages before the template sees them.

    Each message is a mapping with a non-empty string ``role`` and a ``content`` that
    is a string, a list of content parts (mappings, e.g. ``{"type": "text", ...}``) or
    ``None`` (e.g. an assistant message with tool calls).

    Raises:
        ValueError: Naming the message's index and what is wrong with it.

    >>> check_messages([{"role": "user", "content": "Hi"}])
    >>> check_messages([{"content": "Hi"}])
    Traceback (most recent call last):
    ...
    ValueError: messages[0] has no 'role' (expected a non-empty string such as 'user')
    """
    if isinstance(messages, (str, Mapping)) or not isinstance(messages, Sequence):
        raise ValueError(f"messages must be a list of messages, not a {type(messages).__name__}")
    if not messages:
        raise ValueError("messages is empty: pass at least one message")
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ValueError(
                f"messages[{i}] is a {type(message).__name__}; expected a mapping "
                "{'role': ..., 'content': ...}"
            )
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not role:
            raise ValueError(
                f"messages[{i}] has no 'role' (expected a non-empty string such as 'user')"
            )
        if isinstance(content, str):
            check_text(content, f"messages[{i}]['content']")
        parts_ok = isinstance(content, list) and all(isinstance(p, Mapping) for p in content)
        if content is not None and not isinstance(content, str) and not parts_ok:
            raise ValueError(
                f"messages[{i}]['content'] is a {type(content).__name__}; expected a string "
                "(or a list of content parts)"
            )
