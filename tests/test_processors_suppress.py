"""SuppressTokens, BeginSuppressTokens, MinNewTokens, AllowedTokenIds against numpy references."""

from __future__ import annotations

import numpy as np
import pytest

from mlx_gen.processors import AllowedTokenIds, BeginSuppressTokens, MinNewTokens, SuppressTokens
from tests.test_processors import V, apply, make_ctx, random_logits


def ref_ban(logits: np.ndarray, ids) -> np.ndarray:
    out = logits.copy()
    out[:, list(ids)] = -np.inf
    return out


def ref_allow(logits: np.ndarray, ids) -> np.ndarray:
    out = np.full_like(logits, -np.inf)
    out[:, list(ids)] = logits[:, list(ids)]
    return out


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("vocab_size", [None, V])
def test_suppress_tokens_bans_ids_at_every_step(seed, batch, vocab_size):
    ids = [0, 5, 5, 15]
    processor = SuppressTokens(ids, vocab_size=vocab_size)
    logits = random_logits(seed, batch)
    for generated in ([], [1], [1, 2, 3, 4, 6, 7]):
        out = apply(processor, logits, make_ctx([2, 3], generated))
        np.testing.assert_array_equal(out, ref_ban(logits, ids))


def test_suppress_tokens_normalises_ids_and_empty_is_a_no_op():
    assert SuppressTokens([3, 1, 3]).ids == (3, 1)
    logits = random_logits(0)
    np.testing.assert_array_equal(apply(SuppressTokens([]), logits, make_ctx([1])), logits)


@pytest.mark.parametrize("steps", [1, 2, 4])
@pytest.mark.parametrize("prompt_length", [0, 1, 7])
@pytest.mark.parametrize("vocab_size", [None, V])
def test_begin_suppress_applies_only_while_step_below_steps(steps, prompt_length, vocab_size):
    processor = BeginSuppressTokens([3, 9], steps=steps, vocab_size=vocab_size)
    logits = random_logits(steps + prompt_length, batch=2)
    prompt = list(range(prompt_length))
    for step in range(6):
        out = apply(processor, logits, make_ctx(prompt, [1] * step))
        expected = ref_ban(logits, [3, 9]) if step < steps else logits
        np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("vocab_size", [None, V])
def test_min_new_tokens_bans_every_eos_id_until_the_minimum(vocab_size):
    eos = [2, 7, 11]
    processor = MinNewTokens(3, eos_token_ids=eos, vocab_size=vocab_size)
    logits = random_logits(5, batch=2)
    for step in range(5):
        out = apply(processor, logits, make_ctx(list(range(10)), [4] * step))
        if step < 3:
            np.testing.assert_array_equal(out, ref_ban(logits, eos))
            assert np.all(np.isneginf(out[:, eos]))
        else:
            np.testing.assert_array_equal(out, logits)


def test_min_new_tokens_ignores_prompt_length():
    processor = MinNewTokens(2, eos_token_ids=[0])
    long_prompt = make_ctx(list(range(1, 50)), [3])
    assert np.isneginf(apply(processor, random_logits(0), long_prompt)[0, 0])


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("vocab_size", [None, V])
def test_allowed_token_ids_keeps_only_those(seed, batch, vocab_size):
    ids = [4, 0, 12, 4]
    logits = random_logits(seed, batch)
    out = apply(AllowedTokenIds(ids, vocab_size=vocab_size), logits, make_ctx([1, 2], [3]))
    np.testing.assert_array_equal(out, ref_allow(logits, ids))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: SuppressTokens([1, -1]), r"token id -1 is invalid: expected an int >= 0"),
        (lambda: SuppressTokens([16], vocab_size=16), r"token id 16 is invalid \(vocab_size=16\)"),
        (lambda: SuppressTokens([1.5]), r"token id 1.5 is invalid"),
        (lambda: SuppressTokens([True]), r"token id True is invalid"),
        (lambda: SuppressTokens(3), r"ids=3 is invalid"),
        (lambda: SuppressTokens([1], vocab_size=0), r"vocab_size=0 is invalid"),
        (lambda: BeginSuppressTokens([1], steps=0), r"steps=0 is invalid: expected an int >= 1"),
        (lambda: BeginSuppressTokens([99], vocab_size=10), r"token id 99 is invalid"),
        (lambda: MinNewTokens(-1, [0]), r"min_new_tokens=-1 is invalid: expected an int >= 0"),
        (lambda: MinNewTokens(2, [0, 40], vocab_size=32), r"MinNewTokens: token id 40"),
        (lambda: AllowedTokenIds([]), r"ids=\[\] is invalid"),
        (lambda: AllowedTokenIds([5], vocab_size=5), r"AllowedTokenIds: token id 5 is invalid"),
    ],
)
def test_constructors_name_the_bad_value(make, message):
    with pytest.raises(ValueError, match=message):
        make()
