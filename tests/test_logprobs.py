"""Logprobs (raw and processed), score() and next_token_distribution against numpy."""

from __future__ import annotations

import numpy as np
import pytest

import mlx_gen as mg
from tests.scripted import script, scripted_model

PROMPT = [5, 6, 7]
S = mg.GenerationSettings


def np_log_softmax(x):
    x = x.astype(np.float64)
    return x - np.log(np.exp(x - x.max()).sum()) - x.max()


def test_greedy_raw_logprobs_are_the_model_values(tmp_path):
    table = script(3, [20, 21, 22])
    model = scripted_model(tmp_path, table)
    out = mg.generate(
        model, PROMPT, settings=S(max_tokens=3, logprobs=5, logprob_token_ids=[0, 99])
    )
    for step, (token, report) in enumerate(zip(out.token_ids, out.logprobs, strict=True)):
        ref = np_log_softmax(table[2 + step])
        raw = report["raw"]
        assert raw.token == token and raw.rank == 1
        assert raw.logprob == pytest.approx(ref[token], abs=1e-5) and raw.logprob < -1e-4
        expected_top = np.argsort(-ref, kind="stable")[:5]
        assert [i for i, _ in raw.top] == expected_top.tolist()
        np.testing.assert_allclose([v for _, v in raw.top], ref[expected_top], atol=1e-5)
        assert raw.extra == pytest.approx({0: ref[0], 99: ref[99]}, abs=1e-5)


def test_processed_mode_reflects_processors_and_filters(tmp_path):
    table = script(3, [20, 21, 22])
    model = scripted_model(tmp_path, table)
    bias = {30: 2.5}
    out = mg.generate(
        model,
        PROMPT,
        settings=S(max_tokens=1, logprobs=3, logit_bias=bias, logprobs_modes=("raw", "processed")),
    )
    raw, proc = out.logprobs[0]["raw"], out.logprobs[0]["processed"]
    biased = table[2].copy()
    biased[30] += 2.5
    token = out.token_ids[0]
    assert raw.logprob == pytest.approx(np_log_softmax(table[2])[token], abs=1e-5)
    assert proc.logprob == pytest.approx(np_log_softmax(biased)[token], abs=1e-5)
    # top-k=2 sampling: the processed distribution has exactly two finite entries.
    out = mg.generate(
        model,
        PROMPT,
        settings=S(
            max_tokens=1,
            temperature=0.7,
            top_k=2,
            seed=0,
            logprobs=4,
            logprobs_modes=("processed",),
        ),
    )
    top = out.logprobs[0]["processed"].top
    assert np.isfinite([v for _, v in top[:2]]).all() and np.isneginf([v for _, v in top[2:]]).all()
    assert np.exp([v for _, v in top[:2]]).sum() == pytest.approx(1.0, abs=1e-5)


def test_chosen_token_outside_top_n_reports_its_rank(tmp_path):
    table = script(3, [20])
    table[2] = np.linspace(0, 1, table.shape[1])  # id 319 best, 0 worst
    model = scripted_model(tmp_path, table)
    out = mg.generate(
        model, PROMPT, settings=S(max_tokens=1, logprobs=2, logit_bias={5: float("inf")})
    )
    raw = out.logprobs[0]["raw"]
    assert raw.token == 5 and raw.rank == 320 - 5
    assert [i for i, _ in raw.top] == [319, 318]


def test_logprobs_off_by_default_and_then_never_computed(tmp_path, llama_dir, monkeypatch):
    model = scripted_model(tmp_path, script(3, [20, 21, 22]))

    def no_pack(*args, **kwargs):
        raise AssertionError("a logprob report was built although none was requested")

    monkeypatch.setattr("mlx_gen.step_tail.pack", no_pack)
    monkeypatch.setattr("mlx_gen.batch.step.pack", no_pack)
    out = mg.generate(model, PROMPT, settings=S(max_tokens=3))
    assert out.token_ids == [20, 21, 22] and out.logprobs == [{}, {}, {}]
    llama = mg.load(llama_dir)
    batch = mg.generate_batch(
        llama, [PROMPT, PROMPT[:2]], settings=S(max_tokens=2, min_new_tokens=2)
    )
    assert [r.logprobs for r in batch] == [[{}, {}], [{}, {}]]


def test_score_equals_greedy_raw_logprobs(tmp_path):
    table = script(3, [20, 21, 22, 23])
    model = scripted_model(tmp_path, table)
    out = mg.generate(model, PROMPT, settings=S(max_tokens=4, logprobs=0))
    scored = mg.score(model, PROMPT, out.token_ids, top_n=2, chunk_size=2)
    assert scored.token_ids == out.token_ids
    np.testing.assert_allclose(
        [r.logprob for r in scored.logprobs], [r["raw"].logprob for r in out.logprobs], atol=1e-5
    )
    assert scored.total == pytest.approx(sum(r.logprob for r in scored.logprobs))


def test_next_token_distribution_raw_and_processed(tmp_path):
    table = script(3, [20])
    model = scripted_model(tmp_path, table)
    raw = mg.next_token_distribution(model, PROMPT, top_n=3)
    ref = np.exp(np_log_softmax(table[2]))
    np.testing.assert_allclose(np.array(raw.probs), ref, atol=1e-6)
    assert raw.top[0][0] == 20 and [p for _, p in raw.top] == sorted(
        [p for _, p in raw.top], reverse=True
    )
    proc = mg.next_token_distribution(
        model, PROMPT, mode="processed", settings=S(temperature=1.0, top_k=5, suppress_tokens=[20])
    )
    logprobs = np.array(proc.logprobs)
    assert np.isfinite(logprobs).sum() == 5 and np.isneginf(logprobs[20])
    assert float(np.array(proc.probs).sum()) == pytest.approx(1.0, abs=1e-5)
    kept = np.argsort(-np.where(np.arange(320) == 20, -np.inf, table[2]))[:5]
    assert set(np.flatnonzero(np.isfinite(logprobs))) == set(kept.tolist())


def test_stories_greedy_golden_text_and_342_token_stop(stories_dir):
    model = mg.load(stories_dir)
    out = mg.generate(model, "Once upon a time", settings=S(max_tokens=30))
    assert out.text.startswith(
        ", there was a little girl named Lily. She loved to play outside in the park."
    )
    full = mg.generate(
        model, "Once upon a time", settings=S(max_tokens=1000, eos_token_ids=[1, 2], logprobs=0)
    )
    assert (len(full.token_ids), full.finish_reason, full.matched) == (342, "stop", 1)
    scored = mg.score(model, "Once upon a time", full.token_ids)
    diff = np.abs(
        np.array([r.logprob for r in scored.logprobs])
        - np.array([r["raw"].logprob for r in full.logprobs])
    )
    assert diff.max() < 1e-4


def test_score_validates_top_n_and_ids(tmp_path):
    model = scripted_model(tmp_path, script(3, [20]))
    with pytest.raises(ValueError, match="top_n=321"):
        mg.score(model, PROMPT, [20], top_n=321)
    with pytest.raises(
        ValueError, match=r"token_ids\[1\]=320 is outside the vocabulary \(size 320"
    ):
        mg.score(model, PROMPT, [20], token_ids=[5, 320])
    full = mg.score(model, PROMPT, [20], top_n=320)
    assert len(full.logprobs[0].top) == 320
    assert np.exp([v for _, v in full.logprobs[0].top]).sum() == pytest.approx(1.0, abs=1e-4)
