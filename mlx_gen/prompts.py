"""Turn what the caller gives (text, token ids or chat messages) into prompt ids."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

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
            chat without a chat template.
    """
    if (prompt is None) == (messages is None):
        raise ValueError("pass exactly one of prompt= or messages=")
    if messages is not None:
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
        ids = tokenizer.encode(prompt, add_special_tokens=add_special_tokens)
    else:
        ids = list(prompt)  # Not int(): 2.5 or "3" must be refused, not rounded.
    if not ids:
        raise ValueError("the prompt is empty: pass at least one token or character")
    return list(ids)
