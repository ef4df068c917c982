"""The fused logsumexp / log_softmax and the block top-n search, against numpy."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlx_gen.logprobs.logsumexp import _exp_nonpositive, log_softmax, logsumexp
from mlx_gen.logprobs.top_n import BLOCK, top_n_ids


def np_logsumexp(x):
    x = np.asarray(x, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        shift = np.where(np.isinf(m), 0.0, m)
        out = shift + np.log(np.exp(x - shift).sum(axis=-1, keepdims=True))
    return np.where(np.isinf(m), m, out)


def test_exp_matches_numpy_over_the_float32_range():
    x = np.concatenate([np.linspace(-87.0, 0.0, 200_001), [-1e-30, -0.5, -1.0]]).astype(np.float32)
    got = np.array(_exp_nonpositive(mx.array(x))).astype(np.float64)
    ref = np.exp(x.astype(np.float64))
    assert np.max(np.abs(got / ref - 1)) < 3e-7
    assert got[-1] == pytest.approx(np.exp(-1.0), rel=1e-7)


def test_exp_underflows_to_exact_zero():
    got = _exp_nonpositive(mx.array([-mx.inf, -1e4, -90.0, -88.8], dtype=mx.float32))
    assert got.tolist() == [0.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("scale", [0.1, 1.0, 10.0, 100.0])
@pytest.mark.parametrize("vocab", [1, 7, 32000, 49152])
def test_logsumexp_matches_float64(scale, vocab):
    x = (np.random.default_rng(vocab).standard_normal((3, vocab)) * scale).astype(np.float32)
    x[1, ::3] = -np.inf  # suppressed entries
    got = np.array(logsumexp(mx.array(x)))
    ref = np_logsumexp(x)
    # float32 accumulation over V terms: about sqrt(V) * 6e-8 relative in the sum.
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(
        got, np.array(mx.logsumexp(mx.array(x), -1, keepdims=True)), atol=1e-4
    )


def test_logsumexp_special_rows():
    x = mx.array(
        [
            [-mx.inf, -mx.inf, -mx.inf],  # everything excluded
            [0.0, mx.inf, 1.0],  # a forced +inf entry
            [-mx.inf, 3.0, -mx.inf],  # one finite entry
            [1e30, 1e30, -1e30],  # huge, no overflow
        ]
    )
    got = logsumexp(x).reshape(-1).tolist()
    assert got[0] == -np.inf and got[1] == np.inf
    assert got[2] == 3.0
    assert got[3] == pytest.approx(1e30, rel=1e-6)


@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16])
def test_logsumexp_of_half_precision_is_computed_in_float32(dtype):
    x = mx.array(np.linspace(-5, 5, 1000, dtype=np.float32)[None]).astype(dtype)
    got = logsumexp(x)
    assert got.dtype == mx.float32
    ref = np_logsumexp(np.array(x.astype(mx.float32)))
    assert got.item() == pytest.approx(ref.item(), abs=1e-5)


def test_log_softmax_sums_to_one_and_keeps_order():
    x = mx.array(np.random.default_rng(0).standard_normal((2, 5000)).astype(np.float32) * 4)
    lp = np.array(log_softmax(x)).astype(np.float64)
    np.testing.assert_allclose(np.exp(lp).sum(-1), 1.0, atol=1e-5)
    ref = np.array(x).astype(np.float64) - np_logsumexp(np.array(x))
    np.testing.assert_allclose(lp, ref, atol=2e-5)


@settings(max_examples=60, deadline=None)
@given(
    vocab=st.integers(1, 3 * BLOCK + 5),
    n=st.integers(1, 12),
    levels=st.integers(1, 6),  # few distinct values: many ties
    inf_share=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_top_n_ids_are_a_valid_top_n(vocab, n, levels, inf_share, seed):
    n = min(n, vocab)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, levels, size=(2, vocab)).astype(np.float32)
    x[rng.random((2, vocab)) < inf_share] = -np.inf
    ids = np.array(top_n_ids(mx.array(x), n))
    for row, got in zip(x, ids, strict=True):
        assert len(set(got.tolist())) == n and got.min() >= 0 and got.max() < vocab
        # The values picked are the n largest (ids may differ only among ties).
        assert sorted(row[got].tolist()) == sorted(row.tolist())[-n:]


@pytest.mark.parametrize("vocab", [32000, 32001, 50257])
@pytest.mark.parametrize("n", [1, 5, 20])
def test_top_n_ids_on_vocabulary_sized_rows(vocab, n):
    x = np.random.default_rng(n).standard_normal((3, vocab)).astype(np.float32)
    x[2, :-2] = -np.inf  # a forced row: two finite entries, the rest excluded
    ids = np.array(top_n_ids(mx.array(x), n))
    for r in range(2):
        assert sorted(ids[r].tolist()) == sorted(np.argsort(-x[r])[:n].tolist())
    assert {vocab - 2, vocab - 1} <= set(ids[2].tolist()) or n == 1
    assert len(set(ids[2].tolist())) == n and ids[2].max() < vocab


def test_top_n_rejects_bad_n():
    with pytest.raises(ValueError, match="n=0 is invalid: expected 1..4"):
        top_n_ids(mx.zeros((1, 4)), 0)
