"""RepetitionPenalty (HF) and Presence/FrequencyPenalty (OpenAI) against numpy references."""

from __future__ import annotations

import numpy as np
import pytest

from mlx_gen.processors import FrequencyPenalty, PresencePenalty, RepetitionPenalty
from tests.test_processors import apply, make_ctx, random_logits


def ref_repetition(logits: np.ndarray, context, penalty: float) -> np.ndarray:
    out = logits.copy()
    for token in set(context):
        x = logits[:, token]
        out[:, token] = np.where(x < 0, x * penalty, x / penalty)
    return out


def ref_presence(logits: np.ndarray, generated, penalty: float) -> np.ndarray:
    counts = np.bincount(np.asarray(generated, dtype=np.int64), minlength=logits.shape[-1])
    return logits - penalty * (counts > 0).astype(np.float32)


def ref_frequency(logits: np.ndarray, generated, penalty: float) -> np.ndarray:
    counts = np.bincount(np.asarray(generated, dtype=np.int64), minlength=logits.shape[-1])
    return logits - penalty * counts.astype(np.float32)


CONTEXTS = [([1, 2, 3], []), ([4, 4, 4, 0], [15]), ([], [5, 5, 6]), ([7, 1], [1, 1, 9, 7, 7, 7, 2])]


@pytest.mark.parametrize(("prompt", "generated"), CONTEXTS)
@pytest.mark.parametrize("penalty", [0.5, 1.3, 2.0])
@pytest.mark.parametrize("batch", [1, 2])
def test_repetition_penalty_matches_reference(prompt, generated, penalty, batch):
    for seed in range(3):
        logits = random_logits(seed, batch)
        out = apply(RepetitionPenalty(penalty), logits, make_ctx(prompt, generated))
        expected = ref_repetition(logits, prompt + generated, penalty)
        np.testing.assert_allclose(out, expected, rtol=1e-6)


@pytest.mark.parametrize("context_size", [1, 3, 100])
def test_repetition_penalty_context_size_uses_the_last_tokens(context_size):
    prompt, generated = [1, 2, 3, 4], [5, 6]
    logits = random_logits(context_size, batch=2)
    out = apply(
        RepetitionPenalty(1.5, context_size=context_size), logits, make_ctx(prompt, generated)
    )
    window = (prompt + generated)[-context_size:]
    np.testing.assert_allclose(out, ref_repetition(logits, window, 1.5), rtol=1e-6)


def test_repetition_penalty_does_not_compound_over_duplicates():
    logits = np.array([[4.0, -4.0, 4.0, 0.0]], dtype=np.float32)
    out = apply(RepetitionPenalty(2.0), logits, make_ctx([0, 0, 0, 1], [1, 1, 3]))
    np.testing.assert_array_equal(out, [[2.0, -8.0, 4.0, 0.0]])


def test_repetition_penalty_keeps_bans_and_handles_an_empty_context():
    logits = random_logits(0)
    logits[0, 2] = -np.inf
    out = apply(RepetitionPenalty(1.2), logits, make_ctx([2, 3]))
    assert np.isneginf(out[0, 2])
    np.testing.assert_array_equal(apply(RepetitionPenalty(1.2), logits, make_ctx([])), logits)


@pytest.mark.parametrize(("prompt", "generated"), CONTEXTS)
@pytest.mark.parametrize("penalty", [-0.5, 0.7, 2.0])
@pytest.mark.parametrize("batch", [1, 2])
def test_presence_and_frequency_match_reference(prompt, generated, penalty, batch):
    logits = random_logits(len(generated), batch)
    ctx = make_ctx(prompt, generated)
    np.testing.assert_allclose(
        apply(PresencePenalty(penalty), logits, ctx),
        ref_presence(logits, generated, penalty),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        apply(FrequencyPenalty(penalty), logits, ctx),
        ref_frequency(logits, generated, penalty),
        rtol=1e-6,
    )


def test_presence_and_frequency_ignore_the_prompt():
    logits = random_logits(1)
    ctx = make_ctx([3, 3, 4], [])  # step 0: nothing generated yet
    np.testing.assert_array_equal(apply(PresencePenalty(1.0), logits, ctx), logits)
    np.testing.assert_array_equal(apply(FrequencyPenalty(1.0), logits, ctx), logits)
    out = apply(FrequencyPenalty(1.0), logits, make_ctx([3, 3, 4], [4, 4]))
    np.testing.assert_allclose(out[0, [3, 4]], logits[0, [3, 4]] - [0.0, 2.0], rtol=1e-6)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: RepetitionPenalty(0.0), r"penalty=0.0 is invalid: expected a number > 0"),
        (lambda: RepetitionPenalty(-1), r"penalty=-1 is invalid"),
        (
            lambda: RepetitionPenalty(float("inf")),
            r"penalty=inf is invalid: expected a finite number",
        ),
        (lambda: RepetitionPenalty(1.2, context_size=0), r"context_size=0 is invalid"),
        (lambda: PresencePenalty(float("nan")), r"PresencePenalty: penalty=nan is invalid"),
        (lambda: FrequencyPenalty("1"), r"FrequencyPenalty: penalty='1' is invalid"),
    ],
)
def test_constructors_name_the_bad_value(make, message):
    with pytest.raises(ValueError, match=message):
        make()
