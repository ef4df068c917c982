"""The contract every built-in processor keeps: pure, lazy, batch-preserving, dtype-preserving.

Also holds the helpers the other ``test_processors_*`` files import.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from mlx_gen.processors import (
    BUILTIN_ORDER,
    AllowedTokenIds,
    BadWords,
    BeginSuppressTokens,
    FrequencyPenalty,
    LogitBias,
    MinNewTokens,
    NoRepeatNGram,
    PresencePenalty,
    ProcessorContext,
    RepetitionPenalty,
    SequenceBias,
    SuppressTokens,
)

V = 16


def make_ctx(prompt, generated=()) -> ProcessorContext:
    """A context from plain lists; ``step`` is the number of generated tokens."""
    return ProcessorContext(
        mx.array(list(prompt), dtype=mx.int32),
        mx.array(list(generated), dtype=mx.int32),
        len(generated),
    )


def random_logits(seed: int, batch: int = 1, vocab: int = V) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 3.0, (batch, vocab)).astype(np.float32)


def apply(processor, logits: np.ndarray, ctx: ProcessorContext) -> np.ndarray:
    """Run ``processor`` and check it left its input unchanged and kept shape and dtype."""
    x = mx.array(logits)
    before = np.array(x)  # a copy
    out = processor(x, ctx)
    mx.eval(out)
    np.testing.assert_array_equal(np.array(x), before)
    assert out.shape == x.shape and out.dtype == x.dtype
    return np.array(out)


# One instance of each built-in, chosen so that every one changes the logits below.
ALL = {
    "allowed": AllowedTokenIds([1, 2, 3, 5], vocab_size=V),
    "suppress": SuppressTokens([4, 6]),
    "begin_suppress": BeginSuppressTokens([7], steps=3),
    "min_new_tokens": MinNewTokens(5, eos_token_ids=[0, 8]),
    "bad_words": BadWords([[9], [3, 10]]),
    "no_repeat_ngram": NoRepeatNGram(2),
    "repetition": RepetitionPenalty(1.5),
    "presence": PresencePenalty(0.5),
    "frequency": FrequencyPenalty(0.25),
    "sequence_bias": SequenceBias({(11,): 1.0, (2, 12): -2.0}),
    "logit_bias": LogitBias({13: 3.0, 14: -np.inf}),
}
PROMPT, GENERATED = [1, 3, 2, 3], [2, 2]  # context ends "... 3 2 2"


@pytest.mark.parametrize("name", list(ALL))
def test_every_processor_changes_logits_without_touching_input(name):
    logits = random_logits(0, batch=2)
    out = apply(ALL[name], logits, make_ctx(PROMPT, GENERATED))
    assert not np.array_equal(out, logits)


@pytest.mark.parametrize("name", list(ALL))
def test_every_processor_is_lazy(name):
    # Under mx.compile any .item(), .tolist(), numpy conversion or `if` on an array raises.
    processor = ALL[name]

    def step(logits, prompt, generated):
        return processor(logits, ProcessorContext(prompt, generated, generated.shape[0]))

    ctx = make_ctx(PROMPT, GENERATED)
    x = mx.array(random_logits(1, batch=2))
    compiled = mx.compile(step)(x, ctx.prompt_ids, ctx.generated_ids)
    np.testing.assert_array_equal(np.array(compiled), np.array(processor(x, ctx)))


@pytest.mark.parametrize("name", list(ALL))
def test_every_processor_keeps_low_precision_dtype(name):
    x = mx.array(random_logits(2)).astype(mx.bfloat16)
    out = ALL[name](x, make_ctx(PROMPT, GENERATED))
    assert out.dtype == mx.bfloat16


@pytest.mark.parametrize("name", list(ALL))
def test_batch_rows_are_processed_independently(name):
    logits = random_logits(3, batch=2)
    ctx = make_ctx(PROMPT, GENERATED)
    both = apply(ALL[name], logits, ctx)
    for row in range(2):
        np.testing.assert_array_equal(
            both[row : row + 1], apply(ALL[name], logits[row : row + 1], ctx)
        )


def test_builtin_order_is_bans_then_penalties_then_biases():
    assert BUILTIN_ORDER == (
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
    assert set(BUILTIN_ORDER) == {type(p) for p in ALL.values()}


def test_builtin_order_lets_logit_bias_force_a_banned_token():
    ctx = make_ctx(PROMPT, GENERATED)
    chain = [SuppressTokens([5]), RepetitionPenalty(2.0), LogitBias({5: np.inf})]
    x = mx.array(random_logits(4))
    for processor in chain:
        x = processor(x, ctx)
    expected = np.full((1, V), -np.inf, dtype=np.float32)
    expected[0, 5] = 0.0
    np.testing.assert_array_equal(np.array(x), expected)
