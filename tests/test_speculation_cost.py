"""The cost model: drafting only where verification pays, measured, never a constant.

* :class:`CostModel` alone, on given timings: a drafted position that costs a whole plain
  step (a quantized model on MLX's CPU backend) turns drafting off after one short probe;
  cheap positions with high acceptance draft long; low acceptance decodes plainly and
  probes again after ``RETRY_AFTER`` tokens; ``measure_cost=False`` always drafts.
* End to end on stories260K: a processor whose cost is per position (so verifying ``k``
  drafts costs ``k + 1`` steps, as a 4-bit matmul does on the CPU) makes the call stop
  drafting after the probe, and the output stays the plain output.
"""

from __future__ import annotations

from dataclasses import replace

import mlx.core as mx
import pytest

import mlx_gen as mg
from mlx_gen.speculation_cost import PROBE, RETRY_AFTER, CostModel, SpeculationStats
from tests.conftest import STORIES

TEXT = (
    'Tom said, "I want to play with the ball." Lily said, "I want to play with the ball." '
    'Mom said, "'
)


def measured(step: float, per_draft: float, alpha: float) -> CostModel:
    model = CostModel(SpeculationStats())
    model.plain(step)
    model.plain(step)
    assert model.length(8) == PROBE  # the first round is a short probe
    model.round(k=4, seconds=step + 4 * per_draft, accepted=round(4 * alpha))
    return model


def test_a_position_costing_a_whole_step_turns_drafting_off_for_good():
    model = measured(step=0.01, per_draft=0.01, alpha=1.0)
    assert [model.length(8) for _ in range(100)] == [0] * 100
    assert model.stats.decision.startswith("off: a drafted position costs 1.00 plain steps")


def test_cheap_positions_and_high_acceptance_draft_long():
    model = measured(step=0.01, per_draft=0.0005, alpha=1.0)
    assert model.length(8) == 8
    assert model.stats.per_draft_s == pytest.approx(0.0005)


def test_low_acceptance_decodes_plainly_then_probes_again():
    model = measured(step=0.01, per_draft=0.004, alpha=0.0)
    assert model.length(8) == 0 and model.stats.decision.startswith("plain: acceptance 0.00")
    for _ in range(RETRY_AFTER):
        model.plain(0.01)
    assert model.length(8) == 1  # a one-draft probe, then back to measuring acceptance


def test_measure_cost_false_always_drafts():
    model = CostModel(SpeculationStats(), enabled=False)
    assert model.length(5) == 5 and model.length(0) == 0
    with pytest.raises(ValueError, match="measure_cost='no' is invalid"):
        mg.PromptLookup(measure_cost="no")


@pytest.mark.skipif(not (STORIES / "config.json").exists(), reason=f"{STORIES} is absent")
def test_costly_positions_stop_drafting_and_keep_the_output():
    story = mg.load(STORIES)

    weight = mx.random.normal((512, 512), key=mx.random.key(0))

    def per_position_cost(logits, ctx):  # a matmul for every position processed
        return logits + 0.0 * mx.tanh((weight @ weight).sum())

    ids = story.tokenizer.encode(TEXT)
    base = mg.GenerationSettings(max_tokens=30, temperature=0.0,
                                 logits_processors=[per_position_cost])  # fmt: skip
    assert RETRY_AFTER > base.max_tokens  # a "plain:" decision never drafts again here
    plain = mg.generate(story, ids, settings=base)
    stats = SpeculationStats()
    lookup = mg.PromptLookup(num_draft=8, min_ngram=1)
    run = mg.speculative_generate_tokens(story, ids, replace(base, speculative=lookup), stats=stats)
    assert [t.token for t in run] == plain.token_ids
    assert stats.rounds == 1 and stats.drafted <= PROBE  # one probe, then plain for good
    # "off:" when a drafted position measures >= 1/MARGIN of a step; under a loaded machine
    # the measured ratio can dip below that, and then low acceptance keeps it plain until
    # RETRY_AFTER (> max_tokens here): either way no second round is drafted.
    assert stats.decision.startswith(("off:", "plain:")), stats
    assert stats.per_draft_s >= 0.6 * stats.step_s
    # Without the processor's cost each drafted position is measured cheaper.
    cheap = SpeculationStats()
    fast = mg.GenerationSettings(max_tokens=30, temperature=0.0, speculative=lookup)
    list(mg.speculative_generate_tokens(story, ids, fast, stats=cheap))
    assert cheap.per_draft_s < stats.per_draft_s
