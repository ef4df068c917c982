"""Nothing left to sample from, bad processor outputs, and PromptCache consistency.

Before: with every id banned, greedy decoding emitted id 0 with logprob NaN and sampling
emitted banned ids; a processor returning ``(1, 10)`` logits was accepted; after a
processor raised, the next call on the same PromptCache was off by up to 0.06 in
logprob; two interleaved streams on one cache corrupted each other.
"""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest

import mlx_gen as mg
from mlx_gen.no_allowed_token import NO_TOKEN, has_choice
from tests.checkpoints import VOCAB_SIZE, llama_config, write_checkpoint
from tests.scripted import script, scripted_model

PROMPT = [5, 6, 7]
S = mg.GenerationSettings
ALL = tuple(range(VOCAB_SIZE))


def ban_all_from(step: int):
    """A processor writing -inf everywhere from generated position ``step`` on."""

    def processor(logits, ctx):
        return mx.full(logits.shape, -mx.inf) if ctx.step >= step else logits

    return processor


def nan_from(step: int):
    def processor(logits, ctx):
        return logits * mx.nan if ctx.step >= step else logits

    return processor


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> mg.LoadedModel:
    folder = tmp_path_factory.mktemp("cache") / "tiny"
    write_checkpoint(folder, llama_config())
    return mg.load(folder)


def test_has_choice_is_one_flag_per_row():
    rows = mx.array([[0.0, -mx.inf], [-mx.inf, -mx.inf], [1.0, mx.nan], [mx.inf, -mx.inf]])
    assert has_choice(rows).tolist() == [True, False, False, False]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize(
    "ban",
    [
        S(suppress_tokens=ALL),
        S(allowed_token_ids=[9], suppress_tokens=[9]),
        S(logits_processors=[nan_from(0)]),
    ],
    ids=["suppress-all", "allowed-banned", "nan"],
)
def test_nothing_allowed_at_the_first_step_ends_without_a_token(tiny, ban, temperature):
    model = tiny
    settings = mg.GenerationSettings(
        **{**ban.__dict__, "temperature": temperature, "seed": 1, "max_tokens": 5, "logprobs": 2,
           "logprobs_modes": ("raw", "processed")}
    )  # fmt: skip
    result = mg.generate(model, PROMPT, settings=settings)
    assert (result.token_ids, result.text, result.finish_reason) == ([], "", "no_allowed_token")
    tokens = list(mg.generate_tokens(model, PROMPT, settings))
    assert [(t.token, t.finish_reason, t.logprobs) for t in tokens] == [
        (NO_TOKEN, "no_allowed_token", {})
    ]
    [batched] = mg.generate_batch(model, [PROMPT], settings=settings)
    assert (batched.token_ids, batched.finish_reason) == ([], "no_allowed_token")


@pytest.mark.parametrize("make", [ban_all_from, nan_from])
@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_tokens_before_the_dead_end_are_kept_with_finite_logprobs(tiny, make, temperature):
    model = tiny
    settings = S(
        max_tokens=6,
        ignore_eos=True,
        temperature=temperature,
        seed=3,
        logprobs=1,
        logprobs_modes=("raw", "processed"),
        logits_processors=[make(2)],
    )
    result = mg.generate(model, PROMPT, settings=settings)
    assert len(result.token_ids) == 2 and result.finish_reason == "no_allowed_token"
    if temperature == 0:
        free = S(max_tokens=2, ignore_eos=True)
        assert result.token_ids == mg.generate(model, PROMPT, settings=free).token_ids
    for report in result.logprobs:
        assert all(math.isfinite(r.logprob) for r in report.values())
    other = S(max_tokens=6, ignore_eos=True, logits_processors=[make(2)], temperature=0.5, seed=5)
    rows = mg.generate_batch(model, [PROMPT, [5, 6]], per_prompt_settings=[settings, other])
    assert rows[0].token_ids == result.token_ids and rows[0].finish_reason == "no_allowed_token"
    assert rows[1].finish_reason == "no_allowed_token" and len(rows[1].token_ids) == 2


def test_a_dead_end_in_one_batch_row_leaves_the_others_alone(tiny):
    model = tiny
    free = S(max_tokens=4, ignore_eos=True)
    rows = mg.generate_batch(
        model, [PROMPT, PROMPT], per_prompt_settings=[S(max_tokens=4, suppress_tokens=ALL), free]
    )
    assert (rows[0].token_ids, rows[0].finish_reason) == ([], "no_allowed_token")
    assert rows[1].token_ids == mg.generate(model, PROMPT, settings=free).token_ids


def test_overflowing_logits_end_instead_of_nan_logprobs(tiny):
    # frequency_penalty=-1e308 pushes a repeated token's logit to +inf (softmax: NaN).
    settings = S(
        max_tokens=8, ignore_eos=True, frequency_penalty=-1e308, logprobs=1,
        logprobs_modes=("raw", "processed"),
    )  # fmt: skip
    result = mg.generate(tiny, PROMPT, settings=settings)
    assert result.finish_reason == "no_allowed_token" and result.token_ids
    for report in result.logprobs:
        assert all(math.isfinite(r.logprob) for r in report.values())
    forced = mg.generate(tiny, PROMPT, settings=S(max_tokens=3, logit_bias={9: mx.inf}))
    assert forced.token_ids == [9, 9, 9]  # logit_bias's +inf rewrites to 0 / -inf: valid


def test_sampling_never_emits_a_banned_id(tmp_path):
    # Every id but 7 is banned at step 0, then every id: sampling drew banned ids before.
    model = scripted_model(tmp_path, script(3, [20, 21]))
    for seed in range(5):
        result = mg.generate(
            model,
            PROMPT,
            settings=S(
                max_tokens=4, temperature=1.0, seed=seed, allowed_token_ids=[7],
                logits_processors=[ban_all_from(1)],
            ),
        )  # fmt: skip
        assert (result.token_ids, result.finish_reason) == ([7], "no_allowed_token")


@pytest.mark.parametrize(
    "bad", [lambda lg, ctx: lg[:, :10], lambda lg, ctx: lg.astype(mx.int32), lambda lg, ctx: 0.0]
)
def test_a_processor_of_the_wrong_shape_or_dtype_is_named(tiny, bad):
    model = tiny
    settings = S(max_tokens=3, logits_processors=[bad])
    with pytest.raises(ValueError, match=r"logits processor .*<lambda> returned .*expected"):
        mg.generate(model, PROMPT, settings=settings)
    with pytest.raises(ValueError, match=r"logits processor .*<lambda> returned"):
        mg.generate_batch(model, [PROMPT], settings=settings)
    with pytest.raises(ValueError, match=r"logits processor .*<lambda> returned"):
        mg.next_token_distribution(model, PROMPT, mode="processed", settings=settings)


def test_next_token_distribution_refuses_when_nothing_is_allowed(tmp_path):
    model = scripted_model(tmp_path, script(3, [20]))
    with pytest.raises(ValueError, match="no token is allowed"):
        mg.next_token_distribution(model, PROMPT, mode="processed", settings=S(suppress_tokens=ALL))


# --- PromptCache: the token list and the KV cache agree on every exit path ---


def raising_at(step: int):
    def processor(logits, ctx):
        if ctx.step == step:
            raise RuntimeError("processor failed")
        return logits

    return processor


def _lps(result: mg.GenerationResult) -> np.ndarray:
    return np.array([r["raw"].logprob for r in result.logprobs])


@pytest.mark.parametrize("fail_at", [0, 1, 3])
def test_logprobs_after_a_failed_call_equal_a_fresh_run(tiny, fail_at):
    prompt = [1, 40, 41, 42, 43]
    good = S(max_tokens=6, ignore_eos=True, logprobs=0)
    fresh = mg.generate(tiny, prompt, settings=good)
    cache = mg.PromptCache(tiny.model)
    bad = S(max_tokens=6, ignore_eos=True, logits_processors=[raising_at(fail_at)])
    with pytest.raises(RuntimeError, match="processor failed"):
        mg.generate(tiny, prompt, settings=bad, prompt_cache=cache)
    assert cache.layers[0].offset == len(cache.token_ids)
    again = mg.generate(tiny, prompt, settings=good, prompt_cache=cache)
    assert again.token_ids == fresh.token_ids
    np.testing.assert_allclose(_lps(again), _lps(fresh), atol=1e-5)


def test_cache_agrees_after_close_stop_string_and_dead_end(tiny):
    prompt = [1, 40, 41, 42, 43]
    good = S(max_tokens=6, ignore_eos=True, logprobs=0)
    fresh = mg.generate(tiny, prompt, settings=good)
    cache = mg.PromptCache(tiny.model)
    stream = mg.stream_generate(tiny, prompt, settings=good, prompt_cache=cache)
    next(stream), next(stream)
    stream.close()
    assert cache.layers[0].offset == len(cache.token_ids)
    stop = tiny.tokenizer.decode(fresh.token_ids[1:3])
    mg.generate(tiny, prompt, settings=S(max_tokens=6, stop=[stop]), prompt_cache=cache)
    assert cache.layers[0].offset == len(cache.token_ids)
    dead = S(max_tokens=6, ignore_eos=True, logits_processors=[ban_all_from(2)])
    assert mg.generate(tiny, prompt, settings=dead, prompt_cache=cache).finish_reason == (
        "no_allowed_token"
    )
    assert cache.layers[0].offset == len(cache.token_ids)
    again = mg.generate(tiny, prompt, settings=good, prompt_cache=cache)
    np.testing.assert_allclose(_lps(again), _lps(fresh), atol=1e-5)


def test_interleaved_streams_on_one_cache_raise(tiny):
    good = S(max_tokens=6, ignore_eos=True, logprobs=0)
    fresh_b = mg.generate(tiny, [1, 50, 51], settings=good)
    cache = mg.PromptCache(tiny.model)
    first = mg.stream_generate(tiny, [1, 40, 41], settings=good, prompt_cache=cache)
    next(first)
    second = list(mg.stream_generate(tiny, [1, 50, 51], settings=good, prompt_cache=cache))
    assert [c.token for c in second] == fresh_b.token_ids  # the newer call is unharmed
    with pytest.raises(ValueError, match="PromptCache was used by another call"):
        next(first)
    assert cache.layers[0].offset == len(cache.token_ids)
