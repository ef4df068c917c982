"""SamplingParams validation, filter_logits against a numpy reference, and sample's randomness."""

from __future__ import annotations

import itertools

import mlx.core as mx
import numpy as np
import pytest

from mlx_gen.sampling import SamplingParams, filter_logits, sample

V = 32


def softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def ref_filter(logits: np.ndarray, t: float, k: int, p: float, m: float) -> np.ndarray:
    """transformers' Temperature → TopK → TopP → MinP warpers, min_tokens_to_keep=1."""
    x = logits / np.float32(t)
    if k > 0:
        kth = np.sort(x, axis=-1)[:, -min(k, x.shape[-1])][:, None]
        x = np.where(x < kth, -np.inf, x)
    if p < 1:
        order = np.argsort(x, axis=-1, kind="stable")  # ascending
        cumulative = np.cumsum(softmax(np.take_along_axis(x, order, axis=-1)), axis=-1)
        remove_sorted = cumulative <= 1 - p
        remove_sorted[:, -1] = False
        remove = np.zeros_like(remove_sorted)
        np.put_along_axis(remove, order, remove_sorted, axis=-1)
        x = np.where(remove, -np.inf, x)
    if m > 0:
        probs = softmax(x)
        x = np.where(probs < m * probs.max(axis=-1, keepdims=True), -np.inf, x)
    return x.astype(np.float32)


def assert_same_filter(out: np.ndarray, expected: np.ndarray) -> None:
    np.testing.assert_array_equal(np.isneginf(out), np.isneginf(expected))
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def random_logits(seed: int, batch: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 2.0, (batch, V)).astype(np.float32)


COMBOS = list(
    itertools.product([0.6, 1.0, 1.8], [0, 1, 3, 40], [1.0, 0.95, 0.6, 0.05], [0.0, 0.05, 0.3])
)


@pytest.mark.parametrize(("t", "k", "p", "m"), COMBOS)
def test_filter_logits_matches_transformers_reference(t, k, p, m):
    params = SamplingParams(temperature=t, top_k=k, top_p=p, min_p=m)
    for seed in range(2):
        logits = random_logits(seed)
        logits[1, seed] = -np.inf  # a token banned by a processor stays banned
        out = np.array(filter_logits(mx.array(logits), params))
        assert_same_filter(out, ref_filter(logits, t, k, p, m))


def test_greedy_returns_processed_logits_unchanged():
    x = mx.array(random_logits(0))
    assert filter_logits(x, SamplingParams(temperature=0.0, top_k=1, top_p=0.1, min_p=0.5)) is x


def test_filters_that_are_off_change_nothing_but_temperature():
    logits = random_logits(1)
    out = filter_logits(mx.array(logits), SamplingParams(temperature=2.0))
    np.testing.assert_allclose(np.array(out), logits / 2.0, rtol=1e-6)


def test_top_k_keeps_ties_with_the_kth_value():
    x = mx.array([[3.0, 1.0, 3.0, 3.0, 0.0]])
    out = filter_logits(x, SamplingParams(temperature=1.0, top_k=2))
    assert out.tolist() == [[3.0, -np.inf, 3.0, 3.0, -np.inf]]


def test_top_p_keeps_the_smallest_set_reaching_top_p():
    probs = np.array([[0.5, 0.3, 0.15, 0.05]])
    x = mx.array(np.log(probs).astype(np.float32))
    kept = lambda p: np.isfinite(np.array(filter_logits(x, SamplingParams(1.0, top_p=p))))[0]  # noqa: E731
    assert kept(0.5).tolist() == [True, False, False, False]
    assert kept(0.79).tolist() == [True, True, False, False]
    assert kept(0.9).tolist() == [True, True, True, False]
    assert kept(1e-9).tolist() == [True, False, False, False]  # at least one token


def test_top_p_after_top_k_counts_every_tie_that_survived_top_k():
    # top_k=3 keeps 5, 4 and all three 2s (ties). With them the top two hold 0.90 < 0.93,
    # so the 2s must stay; counting only one 2 would give 0.96 and drop them.
    logits = np.array([[5.0, 2.0, 4.0, 2.0, 2.0, 0.0]], dtype=np.float32)
    both = filter_logits(mx.array(logits), SamplingParams(1.0, top_k=3, top_p=0.93))
    assert np.isfinite(np.array(both))[0].tolist() == [True, True, True, True, True, False]
    after_top_k = np.where(logits < 2.0, -np.inf, logits)
    alone = filter_logits(mx.array(after_top_k), SamplingParams(1.0, top_p=0.93))
    np.testing.assert_array_equal(np.array(both), np.array(alone))


def test_min_p_is_relative_to_the_top_probability_after_temperature():
    probs = np.array([[0.6, 0.25, 0.1, 0.05]])
    x = mx.array(np.log(probs).astype(np.float32))
    out = filter_logits(x, SamplingParams(temperature=1.0, min_p=0.2))  # floor 0.12
    assert np.isfinite(np.array(out))[0].tolist() == [True, True, False, False]
    colder = filter_logits(x, SamplingParams(temperature=0.5, min_p=0.2))  # 0.25²/0.6² < 0.2
    assert np.isfinite(np.array(colder))[0].tolist() == [True, False, False, False]


@pytest.mark.parametrize(
    "params", [SamplingParams(0.7, 5, 0.9, 0.1), SamplingParams(1.3, 0, 0.8, 0.0)]
)
def test_filter_logits_is_lazy(params):
    # Under mx.compile any .item(), .tolist(), numpy conversion or `if` on an array raises.
    x = mx.array(random_logits(3))
    compiled = mx.compile(lambda logits: filter_logits(logits, params))(x)
    np.testing.assert_array_equal(np.array(compiled), np.array(filter_logits(x, params)))


def _chi_square(counts: np.ndarray, probs: np.ndarray) -> float:
    expected = probs * counts.sum()
    support = expected > 0
    assert counts[~support].sum() == 0  # nothing outside the filtered support
    return float((((counts - expected) ** 2)[support] / expected[support]).sum())


@pytest.mark.parametrize(
    ("params", "critical"),
    [
        # chi-square critical values at p = 0.001 for 5 and 3 degrees of freedom
        (SamplingParams(temperature=1.0), 20.52),
        (SamplingParams(temperature=0.7, top_k=4), 16.27),
    ],
)
def test_sample_frequencies_match_the_filtered_softmax(params, critical):
    logits = np.array([[1.0, 0.5, 0.0, -0.5, -1.0, 2.0]], dtype=np.float32)
    n = 20_000
    filtered = filter_logits(mx.array(np.repeat(logits, n, axis=0)), params)
    counts = np.bincount(np.array(sample(filtered, mx.random.key(1234), greedy=False)), minlength=6)
    probs = softmax(ref_filter(logits, params.temperature, params.top_k, 1.0, 0.0))[0]
    assert _chi_square(counts, probs) < critical


def test_sample_with_a_wrong_temperature_would_fail_the_frequency_check():
    # The check above has power: draws at temperature 1 do not fit temperature 0.7.
    logits = np.array([[1.0, 0.5, 0.0, -0.5, -1.0, 2.0]], dtype=np.float32)
    draws = sample(mx.array(np.repeat(logits, 20_000, axis=0)), mx.random.key(1234), greedy=False)
    counts = np.bincount(np.array(draws), minlength=6)
    assert _chi_square(counts, softmax(logits / 0.7)[0]) > 100


def test_same_key_same_tokens_and_other_key_other_tokens():
    x = mx.array(np.zeros((200, V), dtype=np.float32))
    key = mx.random.key(7)
    first = sample(x, key, greedy=False)
    assert first.dtype == mx.int32 and first.shape == (200,)
    assert first.tolist() == sample(x, key, greedy=False).tolist()
    k1, k2 = mx.random.split(key)
    assert sample(x, k1, greedy=False).tolist() != sample(x, k2, greedy=False).tolist()


def test_sample_does_not_touch_the_global_rng():
    x = mx.array(np.zeros((4, V), dtype=np.float32))
    mx.random.seed(11)
    expected = mx.random.uniform(shape=(3,)).tolist()
    mx.random.seed(11)
    mx.eval(sample(x, mx.random.key(0), greedy=False))
    assert mx.random.uniform(shape=(3,)).tolist() == expected


def test_greedy_sample_is_argmax_and_needs_no_key():
    logits = random_logits(5)
    out = sample(mx.array(logits), None, greedy=True)
    assert out.dtype == mx.int32
    assert out.tolist() == logits.argmax(axis=-1).tolist()


def test_sampling_without_a_key_is_refused():
    with pytest.raises(ValueError, match=r"key=None is invalid when greedy=False"):
        sample(mx.zeros((1, 4)), None, greedy=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": -0.1}, r"temperature=-0.1 is invalid: expected a finite number >= 0"),
        ({"temperature": float("inf")}, r"temperature=inf is invalid"),
        ({"temperature": "hot"}, r"temperature='hot' is invalid"),
        ({"top_k": -1}, r"top_k=-1 is invalid: expected an int >= 0"),
        ({"top_k": 2.5}, r"top_k=2.5 is invalid"),
        ({"top_k": True}, r"top_k=True is invalid"),
        ({"top_p": 2}, r"top_p=2 is invalid: expected a number in \(0, 1\]"),
        ({"top_p": 0.0}, r"top_p=0.0 is invalid"),
        ({"top_p": float("nan")}, r"top_p=nan is invalid"),
        ({"min_p": 1.0}, r"min_p=1.0 is invalid: expected a number in \[0, 1\)"),
        ({"min_p": -0.5}, r"min_p=-0.5 is invalid"),
    ],
)
def test_sampling_params_name_the_bad_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams(**kwargs)


def test_greedy_property():
    assert SamplingParams().greedy
    assert SamplingParams(temperature=0.0, top_k=5).greedy
    assert not SamplingParams(temperature=1e-3).greedy


def test_top_p_on_bfloat16_logits_sums_in_float32():
    # 4096 near-flat bf16 logits: a bf16 running sum would stall far below top_p.
    logits = mx.array(np.random.default_rng(0).normal(0.0, 0.5, (1, 4096))).astype(mx.bfloat16)
    out = filter_logits(logits, SamplingParams(temperature=1.0, top_p=0.9))
    assert out.dtype == mx.bfloat16
    values = np.array(logits.astype(mx.float32))[0]
    ascending = np.sort(values)
    cumulative = np.cumsum(softmax(ascending))
    cutoff = ascending[min(int((cumulative <= 1 - 0.9).sum()), len(values) - 1)]
    np.testing.assert_array_equal(
        np.isfinite(np.array(out.astype(mx.float32)))[0], values >= cutoff
    )
