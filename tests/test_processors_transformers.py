"""Processors and sampling filters against transformers' own LogitsProcessors (needs torch)."""

from __future__ import annotations

import itertools

import mlx.core as mx
import numpy as np
import pytest

from mlx_gen.processors import (
    BadWords,
    BeginSuppressTokens,
    MinNewTokens,
    NoRepeatNGram,
    RepetitionPenalty,
    SequenceBias,
    SuppressTokens,
)
from mlx_gen.sampling import SamplingParams, filter_logits
from tests.test_processors import apply, make_ctx, random_logits

torch = pytest.importorskip("torch")
hf = pytest.importorskip("transformers.generation.logits_process")

CONTEXTS = [
    ([1, 2, 3, 1, 2], [3, 1]),
    ([0, 5, 5, 5], [2, 0, 5]),
    ([7, 8, 9, 10, 11, 7, 8], []),
    ([4, 4, 4, 4], [4, 4]),
]


def hf_apply(processor, logits: np.ndarray, prompt, generated) -> np.ndarray:
    ids = torch.tensor([prompt + generated] * logits.shape[0], dtype=torch.long)
    return processor(ids, torch.from_numpy(logits.copy())).numpy()


@pytest.mark.parametrize(("prompt", "generated"), CONTEXTS)
@pytest.mark.parametrize("penalty", [0.7, 1.5])
def test_repetition_penalty(prompt, generated, penalty):
    logits = random_logits(len(generated), batch=2)
    expected = hf_apply(hf.RepetitionPenaltyLogitsProcessor(penalty), logits, prompt, generated)
    out = apply(RepetitionPenalty(penalty), logits, make_ctx(prompt, generated))
    np.testing.assert_allclose(out, expected, rtol=1e-6)


@pytest.mark.parametrize(("prompt", "generated"), CONTEXTS)
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_no_repeat_ngram(prompt, generated, n):
    logits = random_logits(n, batch=2)
    expected = hf_apply(hf.NoRepeatNGramLogitsProcessor(n), logits, prompt, generated)
    out = apply(NoRepeatNGram(n), logits, make_ctx(prompt, generated))
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize(("prompt", "generated"), CONTEXTS)
def test_bad_words(prompt, generated):
    words = [[6], [1, 2], [2, 3], [5, 5, 5], [8, 9, 12], [4, 4, 4]]
    logits = random_logits(len(prompt), batch=2)
    expected = hf_apply(hf.NoBadWordsLogitsProcessor(words), logits, prompt, generated)
    out = apply(BadWords(words), logits, make_ctx(prompt, generated))
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize(("prompt", "generated"), CONTEXTS)
def test_sequence_bias(prompt, generated):
    bias = {(6,): 2.0, (1, 2): -1.5, (2, 3): 0.5, (5, 5): -3.0, (8, 9, 12): 4.0, (7, 8): -np.inf}
    hf_bias = [[list(seq), value] for seq, value in bias.items()]
    logits = random_logits(len(generated), batch=2)
    expected = hf_apply(hf.SequenceBiasLogitsProcessor(hf_bias), logits, prompt, generated)
    out = apply(SequenceBias(bias), logits, make_ctx(prompt, generated))
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_suppress_begin_suppress_and_min_new_tokens():
    prompt = [3, 1, 4, 1, 5]
    logits = random_logits(0, batch=2)
    suppress = hf.SuppressTokensLogitsProcessor([2, 9])
    begin = hf.SuppressTokensAtBeginLogitsProcessor([7, 8], begin_index=len(prompt))
    min_new = hf.MinNewTokensLengthLogitsProcessor(len(prompt), 2, eos_token_id=[0, 11, 13])
    for generated in ([], [6], [6, 6], [6, 6, 6]):
        ctx = make_ctx(prompt, generated)
        for ours, theirs in [
            (SuppressTokens([2, 9]), suppress),
            (BeginSuppressTokens([7, 8]), begin),
            (MinNewTokens(2, [0, 11, 13]), min_new),
        ]:
            expected = hf_apply(theirs, logits, prompt, generated)
            np.testing.assert_array_equal(apply(ours, logits, ctx), expected)


@pytest.mark.parametrize(
    ("t", "k", "p", "m"),
    list(itertools.product([0.6, 1.0, 1.7], [0, 1, 5], [1.0, 0.9, 0.3], [0.0, 0.1])),
)
def test_sampling_warpers(t, k, p, m):
    warpers = [hf.TemperatureLogitsWarper(t)]
    warpers += [hf.TopKLogitsWarper(k)] if k else []
    warpers += [hf.TopPLogitsWarper(p)] if p < 1 else []
    warpers += [hf.MinPLogitsWarper(m)] if m else []
    params = SamplingParams(temperature=t, top_k=k, top_p=p, min_p=m)
    for seed in range(3):
        logits = random_logits(seed, batch=2)
        expected = torch.from_numpy(logits.copy())
        for warper in warpers:
            expected = warper(None, expected)
        out = np.array(filter_logits(mx.array(logits), params))
        np.testing.assert_array_equal(np.isneginf(out), np.isneginf(expected.numpy()))
        np.testing.assert_allclose(out, expected.numpy(), rtol=1e-6)
