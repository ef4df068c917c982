"""The compiled step tail: fused processor forms and the compiled chain equal the processors.

Every comparison is bit for bit (``np.array_equal``) against the processors called as
processors (the path the processor tests check against numpy references), or against
tokens and logprobs recorded with the code before the chain was compiled.
"""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest

import mlx_gen as mg
from mlx_gen.logprobs.report import LogprobRequest
from mlx_gen.processors import (
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
from mlx_gen.processors.fused import advance, builtin_form, initial_state, probe
from mlx_gen.sampling import SamplingParams
from mlx_gen.step_tail import StepTail, plan_stages

V = 24

FUSED = [
    AllowedTokenIds([1, 2, 5, 9], vocab_size=V),
    SuppressTokens([0, 3], vocab_size=V),
    SuppressTokens([4, 7]),
    BeginSuppressTokens([2, 6], steps=2, vocab_size=V),
    MinNewTokens(3, eos_token_ids=[1, 5], vocab_size=V),
    RepetitionPenalty(1.7),
    RepetitionPenalty(0.6, context_size=3),
    PresencePenalty(0.75),
    PresencePenalty(0.0),
    SequenceBias({(3,): 1.5, (1, 2): -2.0, (4, 1, 7): -math.inf, (5, 5): 0.25}, vocab_size=V),
    BadWords([[8], [2, 9], [1, 1, 3]], vocab_size=V),
    LogitBias({1: 2.5, 4: -math.inf}, vocab_size=V),
    LogitBias({1: 2.5, 6: 0.5}),
    LogitBias({11: math.inf}, vocab_size=V),
]


def _contexts(rng: np.random.Generator):
    for prompt_len in (1, 2, 6):
        for n in (0, 1, 2, 3, 7):
            yield (rng.integers(0, 6, prompt_len).tolist(), rng.integers(0, 12, n).tolist())


def _logits(rng: np.random.Generator, rows: int = 1) -> mx.array:
    x = rng.normal(0, 3, (rows, V)).astype(np.float32)
    x[:, 0] = -x[:, 0]  # negative and positive logits on penalised ids
    return mx.array(x)


@pytest.mark.parametrize("processor", FUSED, ids=lambda p: type(p).__name__)
def test_fused_form_equals_the_processor_bit_for_bit(processor):
    rng = np.random.default_rng(0)
    form = builtin_form(processor)
    assert form is not None
    for prompt, generated in _contexts(rng):
        p, g = mx.array(prompt, dtype=mx.int32), mx.array(generated, dtype=mx.int32)
        logits = _logits(rng)
        want = processor(logits, ProcessorContext(p, g, len(generated)))
        got = form.apply(logits, initial_state([form], [(p, g)], V))
        assert np.array_equal(np.array(want), np.array(got)), (prompt, generated)


@pytest.mark.parametrize("processor", FUSED, ids=lambda p: type(p).__name__)
def test_fused_form_over_rows_and_advanced_state(processor):
    """Three rows at once; the state advanced token by token equals one built from scratch."""
    rng = np.random.default_rng(1)
    form = builtin_form(processor)
    rows = [([1, 2], []), ([4, 1], [7]), ([5, 5, 5], [2, 9, 3])]
    arrays = [(mx.array(p, dtype=mx.int32), mx.array(g, dtype=mx.int32)) for p, g in rows]
    state = initial_state([form], arrays, V)
    for _ in range(4):
        logits = _logits(rng, rows=3)
        got = np.array(form.apply(logits, state))
        for i, (p, g) in enumerate(rows):
            ctx = ProcessorContext(mx.array(p), mx.array(g, dtype=mx.int32), len(g))
            assert np.array_equal(got[i], np.array(processor(logits[i : i + 1], ctx))[0])
        tokens = rng.integers(0, 12, 3).tolist()
        state = advance(state, mx.array(tokens, dtype=mx.int32))
        rows = [(p, [*g, t]) for (p, g), t in zip(rows, tokens, strict=True)]


def test_step_bound_and_history_processors_are_not_fused():
    assert builtin_form(FrequencyPenalty(0.5)) is None  # its floats follow scatter-add order
    assert builtin_form(NoRepeatNGram(2)) is None

    class Subclass(SuppressTokens):  # may override __call__: never taken for its base
        pass

    assert builtin_form(Subclass([1], vocab_size=V)) is None


def test_custom_processors_are_probed_not_guessed():
    prompt = mx.array([3, 4], dtype=mx.int32)

    def scale(logits, ctx):  # reads nothing per step: compiled
        return logits * 2.0

    def prompt_bias(logits, ctx):  # reads the prompt only: compiled
        return logits.at[:, ctx.prompt_ids].add(1.0)

    def by_step(logits, ctx):  # reads ctx.step: called every step
        return logits - ctx.step

    def host_read(logits, ctx):  # a host read cannot be traced: called every step
        return logits + float(mx.max(logits).item())

    class Stateful:
        compilable = False  # opts out

        def __call__(self, logits, ctx):
            return logits

    assert probe(scale, prompt, V) is not None
    assert probe(prompt_bias, prompt, V) is not None
    assert probe(by_step, prompt, V) is None
    assert probe(host_read, prompt, V) is None
    assert probe(Stateful(), prompt, V) is None
    lm = mg.from_mlx_lm(lambda tokens, logits: logits)  # reads the context ids
    assert probe(lm, prompt, V) is None
    stages = plan_stages([SuppressTokens([1], vocab_size=V), by_step, scale], prompt, V)
    assert [type(s) for s in stages] == [tuple, type(by_step), tuple]


def _run(tail: StepTail, logits_seq, fed_back: bool = True):
    """Drive a tail the way decode does; return tokens and packs."""
    generated = mx.zeros((0,), dtype=mx.int32)
    tokens, packs = [], []
    for step, logits in enumerate(logits_seq):
        token, packed = tail(logits, step, generated)
        mx.eval(token, *([] if packed is None else [packed]))
        tokens.append(token.item())
        packs.append(None if packed is None else np.array(packed))
        if fed_back and tail.needs_generated:
            generated = mx.concatenate([generated, token])
    return tokens, packs


def _custom_step(logits, ctx):
    return logits.at[:, ctx.step % V].add(-3.0)


@pytest.mark.parametrize(
    "sampling",
    [
        SamplingParams(),
        SamplingParams(temperature=0.8, top_k=6, top_p=0.8, min_p=0.05),
        SamplingParams(temperature=1.3, top_p=0.7),
    ],
    ids=["greedy", "top-k-top-p-min-p", "top-p"],
)
@pytest.mark.parametrize("custom", [False, True], ids=["builtins", "with-custom"])
def test_compiled_tail_equals_the_uncompiled_chain(sampling, custom):
    rng = np.random.default_rng(2)
    processors = [
        SuppressTokens([0], vocab_size=V),
        BeginSuppressTokens([2], steps=1, vocab_size=V),
        MinNewTokens(2, eos_token_ids=[5], vocab_size=V),
        *([_custom_step, lambda logits, ctx: logits * 0.9] if custom else []),
        RepetitionPenalty(1.3),
        PresencePenalty(0.4),
        FrequencyPenalty(0.2),
        BadWords([[3, 4]], vocab_size=V),
        LogitBias({i: 0.5 for i in range(6, 12)}, vocab_size=V),
    ]
    request = LogprobRequest(3, (1, 7), ("raw", "processed"))
    logits_seq = [_logits(rng) for _ in range(12)]
    tails = [
        StepTail(
            processors,
            sampling=sampling,
            logprobs=request,
            prompt_ids=mx.array([4, 3, 2], dtype=mx.int32),
            seed=11,
            vocab_size=V,
            compiled=compiled,
        )
        for compiled in (True, False)
    ]
    (tokens_c, packs_c), (tokens_e, packs_e) = (_run(t, logits_seq) for t in tails)
    assert tokens_c == tokens_e
    for a, b in zip(packs_c, packs_e, strict=True):
        assert np.array_equal(a, b)


# Recorded with the code before the tail was compiled (stories260K, prompt "Once upon a time").
GOLDEN_PROMPT = [1, 403, 407, 261, 378]
GOLDEN = {
    "sampled": [432, 383, 286, 261, 376, 268, 414, 422, 395, 405, 426, 405, 401, 396, 267, 337]
    + [335, 345, 352, 266, 280, 295, 419, 263],
    "sampled_plain": [432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396, 267]
    + [337, 269, 311, 268, 420, 414, 433, 302, 349],
    "greedy": [432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396, 267, 337]
    + [410, 408, 419, 292, 411, 322, 265, 282],
}
CONTROLS = dict(
    logit_bias={i: 0.5 for i in range(100, 200)},
    suppress_tokens=[5, 6, 7],
    begin_suppress_tokens=[8, 9],
    repetition_penalty=1.1,
    presence_penalty=0.3,
    bad_words=[[13, 14]],
    min_new_tokens=3,
    sequence_bias={(300, 301): -2.0},
    logprobs=3,
    logprobs_modes=("raw", "processed"),
)


def test_outputs_equal_those_recorded_before_compilation(stories_dir):
    model = mg.load(stories_dir)
    runs = {
        "sampled": dict(CONTROLS, temperature=0.9, top_k=40, top_p=0.9, min_p=0.02, seed=7),
        "sampled_plain": dict(temperature=1.0, seed=3),
        "greedy": CONTROLS,
    }
    for name, options in runs.items():
        out = mg.generate(
            model, GOLDEN_PROMPT, settings=mg.GenerationSettings(max_tokens=24, **options)
        )
        assert out.token_ids == GOLDEN[name], name
