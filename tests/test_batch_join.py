"""Rows joining a running batch change no other row: every row equals its single run.

A row may join at any step, next to rows of any kind (grouped under one compiled tail,
per-row, or constrained); each row's key chain and generated history stay its own
whichever path decodes the step (issue 23, item 1).
"""

from __future__ import annotations

import json
import threading

import httpx
import numpy as np
import pytest

import mlx_gen as mg
from tests.conftest import STORIES
from tests.test_control_matrix import PROMPT

S = mg.GenerationSettings
PROMPTS = ["Once upon a time", "Tom", "Lily went", "The dog"]
KINDS = {
    "sampled": dict(temperature=0.9, top_k=40, ignore_eos=True),
    "penalised": dict(repetition_penalty=3.0, presence_penalty=2.0, ignore_eos=True),  # fused
    "frequency": dict(frequency_penalty=1.5, ignore_eos=True),  # always per-row
    "constrained": dict(constraint=mg.Regex("[a-z ]+")),
    "constrained_sampled": dict(
        constraint=mg.Regex("[a-z ]+"), temperature=0.8, logprobs=2, logprobs_modes=("processed",)
    ),
    "greedy": dict(ignore_eos=True),
    "logprobs": dict(
        logprobs=3,
        logprobs_modes=("raw", "processed"),
        temperature=0.8,
        top_p=0.9,
        ignore_eos=True,
    ),  # fmt: skip
}


@pytest.fixture(scope="module")
def stories():
    if not (STORIES / "config.json").exists():
        pytest.skip(f"{STORIES} is absent")
    return mg.load(STORIES)


def _settings(kind: str, max_tokens: int, seed: int) -> mg.GenerationSettings:
    return S(max_tokens=max_tokens, seed=seed, **KINDS[kind])


def assert_equal_to_single(stories, prompts, rows, batch, singles):
    for prompt, settings, got in zip(prompts, rows, batch, strict=True):
        key = (prompt, settings)
        if key not in singles:
            singles[key] = mg.generate(stories, prompt, settings=settings)
        want = singles[key]
        assert got.token_ids == want.token_ids, (prompt, settings)
        assert got.finish_reason == want.finish_reason
        assert len(got.logprobs) == len(want.logprobs)
        for g, w in zip(got.logprobs, want.logprobs, strict=True):
            for mode in w:
                assert g[mode].token == w[mode].token
                np.testing.assert_allclose(g[mode].logprob, w[mode].logprob, atol=1e-5)
                np.testing.assert_allclose(
                    [v for _, v in g[mode].top], [v for _, v in w[mode].top], atol=1e-5
                )


def test_issue_repro_a_constrained_row_joining_leaves_a_sampled_row_unchanged(stories):
    a = S(max_tokens=20, temperature=0.9, seed=1)
    b = S(max_tokens=1, temperature=0.9, seed=7)
    c = S(max_tokens=10, temperature=0.0, constraint=mg.Regex("[a-z ]+"))
    prompts = PROMPTS[:3]
    out = mg.generate_batch(stories, prompts, per_prompt_settings=[a, b, c], batch_size=2)
    assert_equal_to_single(stories, prompts, [a, b, c], out, {})


@pytest.mark.parametrize("running", sorted(KINDS))
def test_a_row_of_every_kind_joins_at_every_step_offset(stories, running):
    """Rows 0 and 1 run (same kind); row 1 leaves after ``offset`` tokens and row 2 (any
    kind) takes its place; row 3 joins when row 2 leaves. Offset 0: all start together."""
    singles: dict = {}
    for joining in sorted(KINDS):
        for offset in range(5):
            rows = [_settings(running, 12, 1), _settings(running, max(offset, 1), 2),
                    _settings(joining, 6, 3), _settings(running, 3, 4)]  # fmt: skip
            batch_size = 4 if offset == 0 else 2
            batch = mg.generate_batch(
                stories, PROMPTS, per_prompt_settings=rows, batch_size=batch_size
            )
            assert_equal_to_single(stories, PROMPTS, rows, batch, singles)


SPEC_KINDS = {  # greedy: a speculating row gives exactly its plain tokens
    "speculative": dict(ignore_eos=True),
    "speculative_penalised": dict(repetition_penalty=1.05, ignore_eos=True),
}


def _decode_with_join(stories, prompts, first, second, offset):
    """Row 0 runs alone; row 1 is added after ``offset`` steps; tokens and rounds per row."""
    from mlx_gen.batch.decode import BatchDecoder
    from mlx_gen.plan import DecodePlan

    ids = [stories.tokenizer.encode(p) for p in prompts]
    decoder = BatchDecoder(stories, [ids[0]], [DecodePlan.build(stories, first)], batch_size=2)
    tokens: dict[int, list] = {0: [], 1: []}
    steps = 0
    while steps <= offset or not decoder.done:
        if steps == offset:
            decoder.add(ids[1], DecodePlan.build(stories, second))
        for index, out in decoder.step():
            tokens[index].append(out)
        steps += 1
    rounds = [decoder.speculation(i).rounds if decoder.speculation(i) else 0 for i in (0, 1)]
    return ids, tokens, rounds


@pytest.mark.parametrize("spec_kind", sorted(SPEC_KINDS))
@pytest.mark.parametrize("other", sorted(KINDS))
def test_a_speculating_row_joined_and_joining_at_every_step_offset(stories, spec_kind, other):
    """A speculating row (prompt lookup) is joined by a row of every kind after every
    number of steps, and joins such a row: both equal their single runs, and the
    speculating row really drafted (while it ran alone)."""
    lookup = mg.PromptLookup(num_draft=4, min_ngram=1, measure_cost=False)
    spec = S(max_tokens=24, speculative=lookup, **SPEC_KINDS[spec_kind])
    plain = S(max_tokens=24, **SPEC_KINDS[spec_kind])
    for joined in (True, False):
        for offset in range(7):
            other_settings = _settings(other, 5 if joined else 4, 3)
            pair = (spec, other_settings) if joined else (other_settings, spec)
            prompts = (PROMPT, "Tom") if joined else ("Tom", PROMPT)  # PROMPT repeats n-grams
            ids, tokens, rounds = _decode_with_join(stories, prompts, *pair, offset)
            for i, settings in enumerate(pair):
                want = mg.generate(stories, ids[i], settings=settings)
                if settings is spec:
                    assert want.token_ids == mg.generate(stories, ids[i], settings=plain).token_ids
                    assert rounds[i] > 0, (joined, offset)  # it drafted while alone
                got = [t.token for t in tokens[i] if t.token >= 0]
                assert got == want.token_ids, (spec_kind, other, joined, offset, i)
                for g, w in zip(tokens[i], want.logprobs, strict=False):
                    for mode in w:
                        np.testing.assert_allclose(g.logprobs[mode].logprob, w[mode].logprob,
                                                   atol=1e-5)  # fmt: skip


def test_through_the_server_a_response_format_request_joining_changes_no_seeded_stream(stories):
    from tests.serving import running_server

    seeded = {"model": "test", "prompt": "Once upon a time", "max_tokens": 24,
              "temperature": 0.9, "seed": 1, "return_token_ids": True, "stream": True}  # fmt: skip
    joiner = {"model": "test", "prompt": "Lily went", "max_tokens": 8,
              "response_format": {"type": "json_object"}}  # fmt: skip
    want = mg.generate(stories, "Once upon a time", settings=S(max_tokens=24, temperature=0.9,
                                                              seed=1)).token_ids  # fmt: skip
    with running_server(stories, max_batch_size=4) as url, httpx.Client(timeout=60) as client:
        for offset in (1, 4):
            ids, joined = [], None
            with client.stream("POST", url + "/v1/completions", json=seeded) as r:
                for line in r.iter_lines():
                    if not line.startswith("data: {"):
                        continue
                    ids += json.loads(line[6:])["choices"][0].get("token_ids") or []
                    if len(ids) == offset:  # join mid-flight, from another thread
                        joined = threading.Thread(
                            target=client.post, args=(url + "/v1/completions",),
                            kwargs={"json": joiner},
                        )  # fmt: skip
                        joined.start()
            joined.join()
            assert ids == want, offset
