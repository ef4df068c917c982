"""BadWords: id sequences against a reference, and from_strings with real BPE tokenizers."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from mlx_gen.processors import BadWords, ProcessorContext
from tests.test_processors import apply, make_ctx, random_logits


def ref_bad_words(logits: np.ndarray, sequences, context: list) -> np.ndarray:
    out = logits.copy()
    for seq in sequences:
        prefix = list(seq[:-1])
        if len(prefix) <= len(context) and context[len(context) - len(prefix) :] == prefix:
            out[:, seq[-1]] = -np.inf
    return out


def test_single_token_words_are_always_banned_and_longer_ones_after_their_prefix():
    processor = BadWords([[0], [1, 2], [3, 1, 2], [4, 4, 5]])
    logits = random_logits(0, batch=2)
    cases = {(): [0], (9, 1): [0, 2], (3, 1): [0, 2], (4, 4): [0, 5], (4,): [0]}
    for context, banned in cases.items():
        ctx = make_ctx(list(context)) if context else make_ctx([])
        out = apply(processor, logits, ctx)
        assert np.flatnonzero(np.isneginf(out[0])).tolist() == banned
        np.testing.assert_array_equal(
            out, ref_bad_words(logits, processor.sequences, list(context))
        )


def test_sequences_are_deduplicated():
    assert BadWords([[1, 2], (1, 2), [3]]).sequences == ((1, 2), (3,))


@settings(max_examples=60, deadline=None)
@given(
    context=st.lists(st.integers(0, 5), max_size=10),
    sequences=st.lists(st.lists(st.integers(0, 5), min_size=1, max_size=3), max_size=5),
)
def test_bad_words_match_reference_on_random_contexts(context, sequences):
    logits = random_logits(len(context), vocab=6)
    out = apply(BadWords(sequences, vocab_size=6), logits, make_ctx(context[:1], context[1:]))
    np.testing.assert_array_equal(out, ref_bad_words(logits, sequences, context))


def _bpe(space: str, *, sentencepiece: bool):
    """A tiny BPE: "word" is wo+rd, " word" is one token (GPT-2 style) or "▁" + "▁word"."""
    tokens = [space, "w", "o", "r", "d", "x", "wo", "rd", space + "wo", space + "word"]
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = [("w", "o"), ("r", "d"), (space, "wo"), (space + "wo", "rd")]
    tok = Tokenizer(models.BPE(vocab, merges))
    if sentencepiece:  # Llama-style: every space becomes "▁", and one is prepended
        tok.normalizer = normalizers.Sequence(
            [normalizers.Prepend(space), normalizers.Replace(" ", space)]
        )
        tok.decoder = decoders.Sequence(
            [decoders.Replace(space, " "), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
        )
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok), vocab


def test_from_strings_bans_word_with_and_without_leading_space_byte_level():
    tokenizer, vocab = _bpe("Ġ", sentencepiece=False)
    assert tokenizer.encode("word", add_special_tokens=False) == [vocab["wo"], vocab["rd"]]
    assert tokenizer.encode(" word", add_special_tokens=False) == [vocab["Ġword"]]
    processor = BadWords.from_strings(["word"], tokenizer, vocab_size=len(vocab))
    assert set(processor.sequences) == {(vocab["wo"], vocab["rd"]), (vocab["Ġword"],)}
    logits = random_logits(0, vocab=len(vocab))
    after_wo = apply(processor, logits, make_ctx([vocab["x"], vocab["wo"]]))
    assert np.isneginf(after_wo[0, [vocab["rd"], vocab["Ġword"]]]).all()
    after_x = apply(processor, logits, make_ctx([vocab["x"]]))
    assert np.isneginf(after_x[0]).tolist() == [t == vocab["Ġword"] for t in range(len(vocab))]


def test_from_strings_drops_a_lone_sentencepiece_space_token():
    tokenizer, vocab = _bpe("▁", sentencepiece=True)
    assert tokenizer.encode(" word", add_special_tokens=False) == [vocab["▁"], vocab["▁word"]]
    processor = BadWords.from_strings(["word", " word"], tokenizer)
    assert set(processor.sequences) == {(vocab["▁word"],), (vocab["▁"], vocab["▁word"])}
    # "▁word" is banned at every step, and the lone space token never is.
    out = apply(processor, random_logits(1, vocab=len(vocab)), make_ctx([vocab["x"], vocab["▁"]]))
    assert np.flatnonzero(np.isneginf(out[0])).tolist() == [vocab["▁word"]]


def test_from_strings_bans_the_word_whichever_way_it_is_sampled():
    tokenizer, vocab = _bpe("Ġ", sentencepiece=False)
    processor = BadWords.from_strings(["word"], tokenizer)
    logits = np.zeros((1, len(vocab)), np.float32)
    logits[0, [vocab["rd"], vocab["Ġword"]]] = 50.0  # the model wants to say "word"
    ctx = ProcessorContext(mx.array([vocab["wo"]]), mx.array([], dtype=mx.int32), 0)
    token = int(mx.argmax(processor(mx.array(logits), ctx), axis=-1).item())
    assert token not in (vocab["rd"], vocab["Ġword"])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: BadWords([[]]), r"BadWords: sequence \[\] is invalid"),
        (lambda: BadWords([[1, -3]]), r"token id -3 is invalid"),
        (lambda: BadWords([[1, 9]], vocab_size=8), r"token id 9 is invalid \(vocab_size=8\)"),
        (lambda: BadWords("bad"), r"sequences='bad' is invalid"),
        (lambda: BadWords.from_strings("word", None), r"words='word' is invalid"),
        (
            lambda: BadWords.from_strings(["  "], _bpe("Ġ", sentencepiece=False)[0]),
            r"word '  ' is invalid",
        ),
        (
            lambda: BadWords.from_strings([3], _bpe("Ġ", sentencepiece=False)[0]),
            r"word 3 is invalid",
        ),
    ],
)
def test_constructors_name_the_bad_value(make, message):
    with pytest.raises(ValueError, match=message):
        make()
