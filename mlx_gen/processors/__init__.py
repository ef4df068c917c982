"""Logits processors: small, pure, lazy callables ``processor(logits, ctx) -> logits``.

The contract and the context each processor receives are in ``context.py``.

Built-in processors run in the fixed order of ``BUILTIN_ORDER``, then the sampling
filters of ``mlx_gen.sampling`` (temperature, top-k, top-p, min-p):

1. ``AllowedTokenIds``, ``SuppressTokens``, ``BeginSuppressTokens``, ``MinNewTokens``,
   ``BadWords``, ``NoRepeatNGram``: hard bans first. They only ever write ``-inf``,
   so their relative order does not change the result.
2. ``RepetitionPenalty``, ``PresencePenalty``, ``FrequencyPenalty``: penalties see the
   bans' output; a banned ``-inf`` stays ``-inf`` under every penalty.
3. ``SequenceBias``: the caller's soft preferences over sequences.
4. ``LogitBias`` last, so a caller's explicit ``{id: -inf}`` or ``{id: +inf}`` wins
   over everything above: a ``+inf`` bias forces its token even if a rule banned it.

Processors import only mlx (no other mlx_gen package), so every layer above may use them.
"""

from mlx_gen.processors.allowed import AllowedTokenIds
from mlx_gen.processors.bad_words import BadWords, TextTokenizer
from mlx_gen.processors.bias import LogitBias, SequenceBias
from mlx_gen.processors.context import LogitsProcessor, ProcessorContext, from_mlx_lm
from mlx_gen.processors.ngram import NoRepeatNGram
from mlx_gen.processors.penalties import FrequencyPenalty, PresencePenalty, RepetitionPenalty
from mlx_gen.processors.suppress import BeginSuppressTokens, MinNewTokens, SuppressTokens

BUILTIN_ORDER: tuple[type, ...] = (
    AllowedTokenIds,
    SuppressTokens,
    BeginSuppressTokens,
    MinNewTokens,
    BadWords,
    NoRepeatNGram,
    RepetitionPenalty,
    PresencePenalty,
    FrequencyPenalty,
    SequenceBias,
    LogitBias,
)
"""The order in which the built-in processors run (see the module docstring)."""

__all__ = [
    "BUILTIN_ORDER",
    "AllowedTokenIds",
    "BadWords",
    "BeginSuppressTokens",
    "FrequencyPenalty",
    "LogitBias",
    "LogitsProcessor",
    "MinNewTokens",
    "NoRepeatNGram",
    "PresencePenalty",
    "ProcessorContext",
    "RepetitionPenalty",
    "SequenceBias",
    "SuppressTokens",
    "TextTokenizer",
    "from_mlx_lm",
]
