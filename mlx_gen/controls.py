"""Compose the logits processors for one call, in one fixed, documented order.

Order (each step, on ``(1, V)`` logits; the model's settings fill what the caller left
``None``):

1. ``allowed_token_ids``      6. ``no_repeat_ngram_size``  11. ``logit_bias``
2. ``suppress_tokens``        7. ``repetition_penalty``    12. custom processors, in
3. ``begin_suppress_tokens``  8. ``presence_penalty``          the order given
4. ``min_new_tokens``         9. ``frequency_penalty``
5. ``bad_words``             10. ``sequence_bias``        13. ``max_thinking_tokens``

Bans come first and penalties after them; the caller's explicit ``logit_bias`` comes
last among the built-ins so that ``+inf`` forces and ``-inf`` bans whatever else ran;
custom processors see everything the built-ins did. The thinking budget comes last: when
it is due, it forces the end of the think block over everything else. Sampling filters
(temperature → top-k → top-p → min-p) run after all processors, in :mod:`mlx_gen.sampling`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mlx_gen.loading.generation_config import GenerationConfig
from mlx_gen.processors import (
    AllowedTokenIds,
    BadWords,
    BeginSuppressTokens,
    FrequencyPenalty,
    LogitBias,
    MinNewTokens,
    NoRepeatNGram,
    PresencePenalty,
    RepetitionPenalty,
    SequenceBias,
    SuppressTokens,
)
from mlx_gen.processors.context import LogitsProcessor
from mlx_gen.processors.thinking_budget import ThinkingBudget
from mlx_gen.settings import GenerationSettings


def _pick(value: Any, default: Any) -> Any:
    return default if value is None else value


def _bad_words(
    settings: GenerationSettings, defaults: GenerationConfig, tokenizer: Any, vocab_size: int
) -> list[LogitsProcessor]:
    words = [w for w in settings.bad_words if isinstance(w, str)]
    sequences = [tuple(w) for w in settings.bad_words if not isinstance(w, str)]
    sequences += list(defaults.bad_words_ids)
    out: list[LogitsProcessor] = []
    if sequences:
        out.append(BadWords(sequences, vocab_size=vocab_size))
    if words:
        out.append(BadWords.from_strings(words, tokenizer, vocab_size=vocab_size))
    return out


def build_processors(
    settings: GenerationSettings,
    defaults: GenerationConfig,
    *,
    tokenizer: Any,
    vocab_size: int,
    eos_token_ids: Sequence[int],
) -> list[LogitsProcessor]:
    """The processors for one call, in the module's documented order.

    Args:
        settings: The caller's options.
        defaults: The model's generation config.
        tokenizer: Used to tokenize string ``bad_words``.
        vocab_size: Every id is checked against it (``ValueError`` naming the id).
        eos_token_ids: The EOS set ``min_new_tokens`` holds back.

    Returns:
        Processors to apply in order; empty when nothing is configured.
    """
    out: list[LogitsProcessor] = []
    if settings.allowed_token_ids is not None:
        out.append(AllowedTokenIds(settings.allowed_token_ids, vocab_size=vocab_size))
    suppress = _pick(settings.suppress_tokens, defaults.suppress_tokens)
    if suppress:
        out.append(SuppressTokens(suppress, vocab_size=vocab_size))
    begin = _pick(settings.begin_suppress_tokens, defaults.begin_suppress_tokens)
    if begin and settings.begin_suppress_steps > 0:
        out.append(
            BeginSuppressTokens(begin, steps=settings.begin_suppress_steps, vocab_size=vocab_size)
        )
    min_new = _pick(settings.min_new_tokens, defaults.min_new_tokens)
    if min_new and eos_token_ids:
        out.append(MinNewTokens(min_new, eos_token_ids, vocab_size=vocab_size))
    out += _bad_words(settings, defaults, tokenizer, vocab_size)
    ngram = _pick(settings.no_repeat_ngram_size, defaults.no_repeat_ngram_size)
    if ngram:
        out.append(NoRepeatNGram(ngram))
    penalty = _pick(settings.repetition_penalty, defaults.repetition_penalty)
    if penalty != 1.0:
        out.append(RepetitionPenalty(penalty, context_size=settings.repetition_context_size))
    if settings.presence_penalty:
        out.append(PresencePenalty(settings.presence_penalty))
    if settings.frequency_penalty:
        out.append(FrequencyPenalty(settings.frequency_penalty))
    if settings.sequence_bias:
        out.append(SequenceBias(settings.sequence_bias, vocab_size=vocab_size))
    if settings.logit_bias:
        out.append(LogitBias(settings.logit_bias, vocab_size=vocab_size))
    out += list(settings.logits_processors)
    if settings.max_thinking_tokens is not None:
        out.append(thinking_budget(settings, tokenizer))
    return out


def think_marker_ids(tokenizer: Any) -> tuple[int, int] | None:
    """The ids of ``<think>`` and ``</think>`` when both are single tokens, else ``None``."""
    ids = []
    for marker in ("<think>", "</think>"):
        encoded = list(tokenizer.encode(marker, add_special_tokens=False))
        if len(encoded) != 1:
            return None
        ids.append(int(encoded[0]))
    return ids[0], ids[1]


def thinking_budget(settings: GenerationSettings, tokenizer: Any) -> ThinkingBudget:
    """The :class:`ThinkingBudget` of ``settings.max_thinking_tokens``.

    Raises:
        ValueError: The vocabulary lacks ``<think>``/``</think>`` as single tokens.
    """
    markers = think_marker_ids(tokenizer)
    if markers is None:
        raise ValueError(
            f"max_thinking_tokens={settings.max_thinking_tokens} needs a reasoning model: "
            "<think> and </think> must be single tokens of the vocabulary, and are not here"
        )
    message = settings.thinking_end_message
    ids = list(tokenizer.encode(message, add_special_tokens=False)) if message else []
    return ThinkingBudget(
        settings.max_thinking_tokens, start_id=markers[0], end_id=markers[1], message=ids
    )
