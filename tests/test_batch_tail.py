"""The batch's compiled tail: rows sharing one configuration equal their single runs exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest

import mlx_gen as mg
import mlx_gen.batch.step as batch_step
from mlx_gen.batch.generation import generate_batch
from mlx_gen.batch.tail import Group
from tests.checkpoints import llama_config, write_checkpoint

S = mg.GenerationSettings
RNG = np.random.default_rng(3)
PROMPTS = [[int(i) for i in RNG.integers(4, 300, n)] for n in (3, 17, 1, 9, 30)]
CONTROLS = dict(
    logit_bias={i: 0.5 for i in range(100, 140)} | {7: -math.inf},
    suppress_tokens=[5, 6],
    begin_suppress_tokens=[8, 9],
    min_new_tokens=2,
    repetition_penalty=1.2,
    presence_penalty=0.3,
    bad_words=[[20, 21]],
    logprobs=3,
    logprobs_modes=("raw", "processed"),
)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tail") / "llama"
    write_checkpoint(
        folder,
        llama_config(eos_token_id=2),
        generation_config={"eos_token_id": [3, 2], "bos_token_id": 1},
    )
    return mg.load(folder)


@pytest.fixture
def grouped_steps(monkeypatch):
    """Counts the steps that ran through a compiled group."""
    counts = {"grouped": 0, "per_row": 0}
    real = batch_step.group_for

    def spy(rows, vocab_size):
        group = real(rows, vocab_size)
        counts["grouped" if isinstance(group, Group) else "per_row"] += 1
        return group

    monkeypatch.setattr(batch_step, "group_for", spy)
    return counts


def assert_identical(batch, singles):
    for b, s in zip(batch, singles, strict=True):
        assert b.token_ids == s.token_ids
        assert b.finish_reason == s.finish_reason
        assert b.logprobs == s.logprobs  # exact floats, ranks and top lists


@pytest.mark.parametrize(
    "sampling",
    [{}, {"temperature": 0.9, "top_k": 30, "top_p": 0.9}],
    ids=["greedy", "sampled"],
)
def test_shared_configuration_rows_equal_single_runs_bit_for_bit(model, grouped_steps, sampling):
    rows = [
        S(max_tokens=n, seed=10 + i, ignore_eos=True, **CONTROLS, **sampling)
        for i, n in enumerate((6, 11, 4, 9, 7))
    ]
    batch = generate_batch(model, PROMPTS, per_prompt_settings=rows, batch_size=3)
    singles = [mg.generate(model, p, settings=s) for p, s in zip(PROMPTS, rows, strict=True)]
    assert_identical(batch, singles)
    assert grouped_steps["grouped"] > 0 and grouped_steps["per_row"] == 0


def test_rows_move_between_grouped_and_per_row_steps_keeping_their_key_chains(model, grouped_steps):
    """A differently configured row joins mid-run: the others leave their group and return."""
    shared = dict(CONTROLS, temperature=1.0, ignore_eos=True)
    rows = [S(max_tokens=n, seed=i, **shared) for i, n in enumerate((14, 3, 3, 3, 5))]
    # Row 0 runs grouped with row 1, then (regrouped) with row 2, then per-row beside
    # row 3 (another configuration), then grouped again with row 4.
    rows[3] = S(max_tokens=3, seed=3, temperature=1.0, ignore_eos=True, frequency_penalty=0.5)
    batch = generate_batch(model, PROMPTS, per_prompt_settings=rows, batch_size=2)
    singles = [mg.generate(model, p, settings=s) for p, s in zip(PROMPTS, rows, strict=True)]
    assert_identical(batch, singles)
    assert grouped_steps["grouped"] > 0 and grouped_steps["per_row"] > 0
