"""Batched generation and scoring equal their single-sequence forms, row by row."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import mlx_gen as mg
from mlx_gen.batch.generation import generate_batch, stream_generate_batch
from mlx_gen.batch.scoring import score_batch
from mlx_gen.cli.batch_io import read_prompt_file, settings_for_requests, write_jsonl_results
from tests.checkpoints import llama_config, write_checkpoint

S = mg.GenerationSettings
RNG = np.random.default_rng(7)
SHORT = [int(i) for i in RNG.integers(4, 300, 3)]
LONG = [int(i) for i in RNG.integers(4, 300, 40)]
MESSAGES = [{"role": "user", "content": "hello the word"}]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny float32 Llama (GQA), EOS ids (3, 2)."""
    folder = tmp_path_factory.mktemp("batch") / "llama"
    write_checkpoint(
        folder,
        llama_config(eos_token_id=2),
        generation_config={"eos_token_id": [3, 2], "bos_token_id": 1},
    )
    return mg.load(folder)


def assert_same(batch: mg.GenerationResult, single: mg.GenerationResult) -> None:
    assert batch.token_ids == single.token_ids
    assert (batch.text, batch.finish_reason, batch.matched) == (
        single.text,
        single.finish_reason,
        single.matched,
    )
    assert len(batch.logprobs) == len(single.logprobs)
    for got, want in zip(batch.logprobs, single.logprobs, strict=True):
        assert got.keys() == want.keys()
        for mode in want:
            g, w = got[mode], want[mode]
            assert (g.token, g.rank, [i for i, _ in g.top]) == (
                w.token,
                w.rank,
                [i for i, _ in w.top],
            )
            np.testing.assert_allclose(
                [g.logprob, *(v for _, v in g.top)], [w.logprob, *(v for _, v in w.top)], atol=1e-4
            )
            if w.extra is not None:
                np.testing.assert_allclose(
                    list(g.extra.values()), list(w.extra.values()), atol=1e-4
                )


def check_against_single(model, prompts, rows, **kwargs):
    batch = generate_batch(model, prompts, per_prompt_settings=rows, **kwargs)
    singles = []
    for prompt, result, settings in zip(prompts, batch, rows, strict=True):
        key = "messages" if isinstance(prompt, list) and isinstance(prompt[0], dict) else "prompt"
        single = mg.generate(model, **{key: prompt}, settings=settings)
        assert_same(result, single)
        singles.append(single)
    return singles


def test_greedy_rows_of_different_lengths_and_stops_equal_single(model):
    probe = mg.generate(model, LONG, settings=S(max_tokens=16, ignore_eos=True))
    text = mg.generate(model, "hello the word", settings=S(max_tokens=16, ignore_eos=True)).text
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    both = ("raw", "processed")
    rows = [
        S(max_tokens=5, logprobs=3, logprobs_modes=both),
        S(max_tokens=16, eos_token_ids=[probe.token_ids[6]], logprobs=0, logprob_token_ids=(5, 9)),
        S(max_tokens=16, stop=[stop]),
        S(max_tokens=11, ignore_eos=True, logprobs=2, logprobs_modes=both),
        S(max_tokens=16, ignore_eos=True),
    ]
    prompts = [SHORT, LONG, "hello the word", MESSAGES, [7]]
    singles = check_against_single(model, prompts, rows)
    assert [s.finish_reason for s in singles] == [
        "length",
        "stop",
        "stop_string",
        "length",
        "length",
    ]
    assert len({len(s.token_ids) for s in singles}) >= 4  # rows stop at different steps


def test_seeded_sampling_with_processors_equals_single(model):
    nucleus = {"temperature": 1.0, "top_p": 0.9}
    rows = [
        S(
            max_tokens=12,
            seed=1,
            ignore_eos=True,
            logprobs=2,
            logprobs_modes=("processed",),
            **nucleus,
        ),
        S(max_tokens=7, seed=2, repetition_penalty=1.3, logit_bias={20: 2.0, 21: -5.0}, **nucleus),
        S(max_tokens=9, ignore_eos=True, presence_penalty=0.5),  # greedy among sampled rows
        S(max_tokens=10, seed=3, top_k=20, min_p=0.05, temperature=0.7, ignore_eos=True),
        S(max_tokens=12, seed=4, ignore_eos=True, suppress_tokens=[5, 6], **nucleus),
    ]
    check_against_single(model, [SHORT, LONG, LONG[:17], [9], "hello the word"], rows)


def test_continuous_batching_refills_freed_places(model):
    nucleus = {"temperature": 1.0, "top_p": 0.9}
    rows = [
        S(max_tokens=n, seed=n, ignore_eos=True, logprobs=1, **nucleus) for n in (3, 9, 2, 6, 5)
    ]
    probe = mg.generate(model, LONG[:25], settings=S(max_tokens=12, seed=11, **nucleus)).text
    rows[3] = S(max_tokens=12, stop=[probe[len(probe) // 2]], seed=11, **nucleus)
    prompts = [SHORT, LONG, [9], LONG[:25], "hello the word"]
    singles = check_against_single(model, prompts, rows, batch_size=2)
    assert singles[3].finish_reason == "stop_string"


def test_processor_context_is_per_row_and_finished_rows_leave_the_batch(model):
    calls = {0: [], 1: [], 2: []}

    def recorder(index):
        def processor(logits, ctx):
            calls[index].append((logits.shape, ctx.prompt_ids, ctx.generated_ids, ctx.step))
            return logits

        return processor

    class Recording:  # the model, recording the shape of every forward pass
        def __init__(self, inner):
            self.inner, self.shapes = inner, []

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def __call__(self, inputs, cache=None):
            self.shapes.append(inputs.shape)
            return self.inner(inputs, cache=cache)

    wrapped = dataclasses.replace(model, model=Recording(model.model))
    rows = [
        S(max_tokens=2, ignore_eos=True, logits_processors=[recorder(0)]),
        S(max_tokens=6, ignore_eos=True, logits_processors=[recorder(1)]),
        S(max_tokens=9, ignore_eos=True, logits_processors=[recorder(2)],
          stopping_criteria=[lambda ctx: ctx.step >= 3]),
    ]  # fmt: skip
    results = generate_batch(wrapped, [LONG, SHORT, [9]], per_prompt_settings=rows)
    assert [len(r.token_ids) for r in results] == [2, 6, 3]
    # Row 0 leaves before step 2 is built (length); row 2 after its queued step 3 (criterion).
    assert wrapped.model.shapes == [(3, 39), (3, 1), (3, 1), (2, 1), (2, 1), (1, 1), (1, 1)]
    for index, prompt, steps in [(0, LONG, 2), (1, SHORT, 6), (2, [9], 4)]:
        assert [c[3] for c in calls[index]] == list(range(steps))
        for shape, prompt_ids, generated, step in calls[index]:
            assert shape == (1, model.vocab_size)
            assert prompt_ids.tolist() == prompt  # unpadded
            assert generated.tolist() == results[index].token_ids[:step]


def test_stream_chunks_equal_stream_generate(model):
    rows = [S(max_tokens=14, stop=["e", "r"], ignore_eos=True), S(max_tokens=8)]
    prompts = ["hello the word", LONG]
    chunks = {0: [], 1: []}
    for index, chunk in stream_generate_batch(model, prompts, per_prompt_settings=rows):
        chunks[index].append(chunk)
    for index, prompt in enumerate(prompts):
        single = list(mg.stream_generate(model, prompt, settings=rows[index]))
        assert [(c.text, c.token, c.finish_reason, c.matched) for c in chunks[index]] == [
            (c.text, c.token, c.finish_reason, c.matched) for c in single
        ]
        assert chunks[index][-1].stats.generated_tokens == len(single)


def test_max_tokens_zero_row_and_shared_settings(model):
    results = generate_batch(
        model, [SHORT, LONG], settings=S(max_tokens=4), per_prompt_settings=[S(max_tokens=0), None]
    )
    assert (results[0].token_ids, results[0].finish_reason) == ([], "length")
    assert_same(results[1], mg.generate(model, LONG, settings=S(max_tokens=4)))


def test_invalid_batches_are_named(model):
    with pytest.raises(ValueError, match="non-empty list"):
        generate_batch(model, [])
    with pytest.raises(ValueError, match="per_prompt_settings has 1 entries for 2 prompts"):
        stream_generate_batch(model, [SHORT, LONG], per_prompt_settings=[S()])
    with pytest.raises(ValueError, match=r"prompts\[1\].*empty"):
        stream_generate_batch(model, [SHORT, []])
    with pytest.raises(ValueError, match=r"prompts\[2\].*empty"):
        stream_generate_batch(model, [SHORT, "a", ""])
    with pytest.raises(ValueError, match=r"prompts\[1\].*999"):
        stream_generate_batch(
            model, [SHORT, LONG], per_prompt_settings=[None, S(logit_bias={999: 1.0})]
        )
    with pytest.raises(ValueError, match="batch_size=0"):
        stream_generate_batch(model, [SHORT], batch_size=0)


def test_score_batch_equals_score(model):
    pairs = [
        (SHORT, LONG[:5]),
        (LONG, [11, 12]),
        ([1], LONG[:30]),
        ("hello", " the word"),
        (LONG[:10], SHORT),
    ]
    results = score_batch(model, pairs, top_n=3, token_ids=(5, 7), batch_size=2, chunk_size=7)
    for (prompt, continuation), got in zip(pairs, results, strict=True):
        want = mg.score(model, prompt, continuation, top_n=3, token_ids=(5, 7))
        assert got.token_ids == want.token_ids
        assert [(r.rank, [i for i, _ in r.top]) for r in got.logprobs] == [
            (r.rank, [i for i, _ in r.top]) for r in want.logprobs
        ]
        np.testing.assert_allclose(
            [[r.logprob, *r.extra.values()] for r in got.logprobs],
            [[r.logprob, *r.extra.values()] for r in want.logprobs],
            atol=1e-4,
        )
        assert got.total == pytest.approx(want.total, abs=1e-4)
    with pytest.raises(ValueError, match=r"pairs\[1\].*continuation is empty"):
        score_batch(model, [(SHORT, [5]), (SHORT, [])])
    with pytest.raises(ValueError, match="999"):
        score_batch(model, [(SHORT, [5])], token_ids=(999,))


@pytest.mark.slow
def test_stories260k_greedy_batch_equals_single(stories_dir):
    model = mg.load(stories_dir)
    prompts = [
        "Once upon a time",
        "The little dog ran to the park with his friend and they",
        "Lily",
        "One day, a big bear",
    ]
    rows = [
        S(max_tokens=n, logprobs=2, logprobs_modes=("raw", "processed")) for n in (30, 12, 24, 40)
    ]
    check_against_single(model, prompts, rows)


def test_prompt_files_and_jsonl_results(model, tmp_path):
    text = tmp_path / "prompts.txt"
    text.write_text("Once upon\n\nThe cat\n")
    assert [r.prompt for r in read_prompt_file(text)] == ["Once upon", "The cat"]
    chat = read_prompt_file(text, chat=True, system="Be brief")
    assert chat[1].prompt == [
        {"role": "system", "content": "Be brief"},
        {"role": "user", "content": "The cat"},
    ]
    lines = [
        {"prompt": "hello", "max_tokens": 3, "logit_bias": {"20": 5}},
        {"prompt": SHORT, "temperature": 1.0, "seed": 4},
        {"messages": MESSAGES},
    ]
    jsonl = tmp_path / "prompts.jsonl"
    jsonl.write_text("\n".join(json.dumps(x) for x in lines))
    requests = read_prompt_file(jsonl)
    assert requests[0].overrides == {"max_tokens": 3, "logit_bias": {20: 5.0}}
    settings = settings_for_requests(S(max_tokens=5), requests)
    assert [s.max_tokens for s in settings] == [3, 5, 5] and settings[1].seed == 4
    results = generate_batch(model, [r.prompt for r in requests], per_prompt_settings=settings)
    out = tmp_path / "out.jsonl"
    write_jsonl_results(out, results, decode=lambda i: model.tokenizer.decode([i]))
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["index"], r["token_ids"]) for r in records] == [
        (i, r.token_ids) for i, r in enumerate(results)
    ]
    with pytest.raises(FileExistsError):
        write_jsonl_results(out, results, decode=str)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n{"prompt": "b", "temprature": 1}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2.*temprature"):
        read_prompt_file(bad)
