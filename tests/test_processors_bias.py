"""LogitBias and SequenceBias against numpy references, and +inf/-inf under sampling."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlx_gen.processors import LogitBias, SequenceBias
from mlx_gen.sampling import SamplingParams, filter_logits, sample
from tests.test_processors import V, apply, make_ctx, random_logits


def ref_logit_bias(logits: np.ndarray, bias: dict) -> np.ndarray:
    forced = [i for i, b in bias.items() if b == np.inf]
    if forced:
        out = np.full_like(logits, -np.inf)
        out[:, forced] = 0.0
        return out
    out = logits.copy()
    for i, b in bias.items():
        out[:, i] += b
    return out


def ref_sequence_bias(logits: np.ndarray, bias: dict, context: list) -> np.ndarray:
    out = logits.copy()
    for seq, b in bias.items():
        prefix = list(seq[:-1])
        if len(prefix) <= len(context) and (not prefix or context[-len(prefix) :] == prefix):
            out[:, seq[-1]] += b
    return out


BIASES = [
    {0: 1.5, 3: -2.0, 15: 10.0},
    {2: -np.inf, 7: 0.25},
    {4: np.inf, 5: -1.0},
    {4: np.inf, 9: np.inf, 1: -np.inf},
]


@pytest.mark.parametrize("bias", BIASES)
@pytest.mark.parametrize("vocab_size", [None, V])
@pytest.mark.parametrize("batch", [1, 2])
def test_logit_bias_matches_reference(bias, vocab_size, batch):
    for seed in range(3):
        logits = random_logits(seed, batch)
        logits[:, 9] = -np.inf  # an upstream ban; forcing 9 with +inf must not give NaN
        out = apply(LogitBias(bias, vocab_size=vocab_size), logits, make_ctx([1]))
        np.testing.assert_allclose(out, ref_logit_bias(logits, bias), rtol=1e-6)
        assert not np.isnan(out).any()


def test_logit_bias_empty_is_a_no_op():
    logits = random_logits(0)
    np.testing.assert_array_equal(apply(LogitBias({}), logits, make_ctx([1])), logits)


@pytest.mark.parametrize("vocab_size", [None, V])
def test_plus_inf_bias_forces_the_token_under_argmax_and_sampling(vocab_size):
    logits = random_logits(7, batch=1000)
    logits[:, 3] = -50.0  # the forced token is otherwise the least likely
    out = LogitBias({3: np.inf}, vocab_size=vocab_size)(mx.array(logits), make_ctx([1]))
    params = SamplingParams(temperature=1.0)
    assert sample(out, None, greedy=True).tolist() == [3] * 1000
    sampled = sample(filter_logits(out, params), mx.random.key(0), greedy=False)
    assert sampled.tolist() == [3] * 1000
    top_p = filter_logits(out, SamplingParams(temperature=0.7, top_p=0.5, min_p=0.1))
    assert sample(top_p, mx.random.key(1), greedy=False).tolist() == [3] * 1000


def test_minus_inf_bias_is_never_sampled():
    logits = np.zeros((1000, V), dtype=np.float32)
    logits[:, 6] = 5.0  # by far the most likely token before the ban
    out = LogitBias({6: -np.inf})(mx.array(logits), make_ctx([1]))
    drawn = np.array(sample(filter_logits(out, SamplingParams(1.0)), mx.random.key(3), False))
    assert 6 not in drawn
    assert len(set(drawn.tolist())) == V - 1  # every other token still occurs


SEQUENCES = {(5,): 1.0, (1, 2): -3.0, (3, 1, 2): 0.5, (2, 2, 9): -np.inf, (4, 5, 6, 7): 2.0}


@pytest.mark.parametrize(
    "context",
    [[], [1], [3, 1], [0, 3, 1], [2, 2], [0, 2, 2], [4, 5, 6], [6, 4, 5, 6], [7, 7, 7]],
)
@pytest.mark.parametrize("vocab_size", [None, V])
def test_sequence_bias_matches_reference(context, vocab_size):
    processor = SequenceBias(SEQUENCES, vocab_size=vocab_size)
    prompt, generated = context[:1] or [], context[1:]
    ctx = make_ctx(prompt, generated) if context else make_ctx([])
    logits = random_logits(len(context), batch=2)
    expected = ref_sequence_bias(logits, SEQUENCES, context)
    np.testing.assert_allclose(apply(processor, logits, ctx), expected, rtol=1e-6)


def test_sequence_bias_adds_biases_that_end_in_the_same_token():
    processor = SequenceBias({(2,): 1.0, (1, 2): 2.0, (0, 1, 2): 4.0})
    out = apply(processor, np.zeros((1, 4), np.float32), make_ctx([0, 1]))
    np.testing.assert_array_equal(out, [[0.0, 0.0, 7.0, 0.0]])


def test_sequence_bias_matches_a_prefix_as_long_as_the_whole_context():
    # transformers skips a sequence longer than the context; here [1] + 2 completes (1, 2).
    out = apply(SequenceBias({(1, 2): -1.0}), np.zeros((1, 4), np.float32), make_ctx([1]))
    np.testing.assert_array_equal(out, [[0.0, 0.0, -1.0, 0.0]])


@settings(max_examples=60, deadline=None)
@given(
    context=st.lists(st.integers(0, 3), max_size=12),
    sequences=st.dictionaries(
        st.lists(st.integers(0, 3), min_size=1, max_size=4).map(tuple),
        st.sampled_from([-np.inf, -1.5, 0.5, 2.0]),
        max_size=6,
    ),
)
def test_sequence_bias_matches_reference_on_random_contexts(context, sequences):
    logits = random_logits(len(context), vocab=4)
    out = apply(SequenceBias(sequences), logits, make_ctx(context[:2], context[2:]))
    np.testing.assert_allclose(out, ref_sequence_bias(logits, sequences, context), rtol=1e-6)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: LogitBias({-1: 1.0}), r"LogitBias: token id -1 is invalid"),
        (lambda: LogitBias({32: 1.0}, vocab_size=32), r"token id 32 is invalid \(vocab_size=32\)"),
        (lambda: LogitBias({1: float("nan")}), r"bias\[1\]=nan is invalid"),
        (lambda: LogitBias({1: "high"}), r"bias\[1\]='high' is invalid"),
        (lambda: LogitBias([1, 2]), r"bias=\[1, 2\] is invalid: expected a \{id: bias\} mapping"),
        (lambda: SequenceBias({(): 1.0}), r"sequence \(\) is invalid"),
        (lambda: SequenceBias({(1, 40): 1.0}, vocab_size=32), r"token id 40 is invalid"),
        (lambda: SequenceBias({(1, 2): np.inf}), r"bias\[\(1, 2\)\]=inf is invalid"),
        (lambda: SequenceBias({(1,): float("nan")}), r"=nan is invalid"),
    ],
)
def test_constructors_name_the_bad_value(make, message):
    with pytest.raises(ValueError, match=message):
        make()
