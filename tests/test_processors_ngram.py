"""NoRepeatNGram against a brute-force reference written like transformers'."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlx_gen.processors import NoRepeatNGram
from tests.test_processors import apply, make_ctx, random_logits


def ref_no_repeat(logits: np.ndarray, context: list, n: int) -> np.ndarray:
    """Every earlier occurrence of the last n-1 tokens bans the token that followed it."""
    out = logits.copy()
    length = len(context)
    last = tuple(context[length - n + 1 :]) if n > 1 else ()
    banned = {
        context[i + n - 1] for i in range(length - n + 1) if tuple(context[i : i + n - 1]) == last
    }
    out[:, sorted(banned)] = -np.inf
    return out


@pytest.mark.parametrize(
    ("context", "n", "banned"),
    [
        ([1, 2, 3, 1], 2, [2]),
        ([1, 2, 1, 3, 1], 2, [2, 3]),
        ([1, 2, 3, 1, 2], 3, [3]),
        ([1, 2, 3, 1, 2], 4, []),
        ([5, 6, 5], 1, [5, 6]),
        ([1, 1, 1], 2, [1]),
        ([1, 2], 3, []),  # shorter than n
    ],
)
def test_no_repeat_ngram_hand_made(context, n, banned):
    logits = random_logits(n, batch=2)
    out = apply(NoRepeatNGram(n), logits, make_ctx(context[:1], context[1:]))
    assert sorted(np.flatnonzero(np.isneginf(out[0])).tolist()) == banned
    np.testing.assert_array_equal(out, ref_no_repeat(logits, context, n))


def test_no_repeat_ngram_sees_prompt_and_generated_tokens():
    # The n-gram "3 4" is in the prompt; generating "3" again must ban "4".
    out = apply(NoRepeatNGram(2), random_logits(0), make_ctx([3, 4, 9], [3]))
    assert np.isneginf(out[0, 4])


@settings(max_examples=80, deadline=None)
@given(
    context=st.lists(st.integers(0, 4), max_size=16),
    split=st.integers(0, 16),
    n=st.integers(1, 4),
)
def test_no_repeat_ngram_matches_brute_force(context, split, n):
    logits = random_logits(len(context), batch=2, vocab=5)
    out = apply(NoRepeatNGram(n), logits, make_ctx(context[:split], context[split:]))
    np.testing.assert_array_equal(out, ref_no_repeat(logits, context, n))


@pytest.mark.parametrize("n", [0, -2, 1.5, True])
def test_constructor_names_the_bad_value(n):
    with pytest.raises(
        ValueError, match=rf"NoRepeatNGram: n={n!r} is invalid: expected an int >= 1"
    ):
        NoRepeatNGram(n)
