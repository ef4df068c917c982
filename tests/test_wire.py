"""The lockstep server's wire format: settings rebuilt from data on the other ranks."""

from __future__ import annotations

import json

import pytest

import mlx_gen as mg
from mlx_gen.server.main import build_parser
from mlx_gen.server.ranks import check_rank_flags
from mlx_gen.server.wire import NotData, decode_ops, decode_settings, encode_ops, encode_settings


def _roundtrip(settings: mg.GenerationSettings) -> mg.GenerationSettings:
    return decode_settings(json.loads(encode_ops([encode_settings(settings)]))[0])


def test_every_data_setting_travels_exactly() -> None:
    settings = mg.GenerationSettings(
        max_tokens=9, temperature=0.7, top_k=5, top_p=0.9, min_p=0.05, seed=2**40 + 3,
        logit_bias={3: -1.25, 4: float("-inf"), 7: float("inf")}, suppress_tokens=[1, 2],
        begin_suppress_tokens=[5], min_new_tokens=2, repetition_penalty=1.1,
        presence_penalty=0.5, frequency_penalty=0.25, no_repeat_ngram_size=3,
        bad_words=["dog", [4, 5]], sequence_bias={(1, 2): 2.0}, allowed_token_ids=[1, 2, 3],
        constraint=mg.JsonSchema({"type": "object"}), extra_eos_token_ids=[9], stop=["\n", "."],
        include_stop_str=True, logprobs=3, logprob_token_ids=[6], max_thinking_tokens=8,
        logprobs_modes=("raw", "processed"), thinking_end_message="enough", truncate_prompt=40,
    )  # fmt: skip
    back = _roundtrip(settings)
    assert back == settings  # dataclass equality, field by field
    assert back.logit_bias == {3: -1.25, 4: float("-inf"), 7: float("inf")}
    assert back.sequence_bias == {(1, 2): 2.0} and back.bad_words == ["dog", [4, 5]]
    assert back.constraint.grammar == settings.constraint.grammar
    assert _roundtrip(mg.GenerationSettings()) == mg.GenerationSettings()
    assert encode_settings(mg.GenerationSettings()) == {}  # defaults are not sent


def test_code_is_refused_by_name() -> None:
    with pytest.raises(NotData, match=r"logits_processors=.*cannot run on the other ranks"):
        encode_settings(mg.GenerationSettings(logits_processors=[lambda logits, ctx: logits]))
    with pytest.raises(NotData, match="stopping_criteria="):
        encode_settings(mg.GenerationSettings(stopping_criteria=[lambda ctx: False]))


def test_ops_round_trip() -> None:
    ops = [["add", 0, [1, 2], {"seed": 5}, None], ["cancel", 0], ["stop"]]
    assert decode_ops(encode_ops(ops)) == ops
    assert decode_ops(b"") == []


def test_only_the_cache_folder_flags_are_refused_under_ranks() -> None:
    for flag in ("--prompt-cache-dir", "--prompt-cache-dir-bytes"):
        args = build_parser().parse_args([flag, "1G"])
        with pytest.raises(ValueError, match=f"{flag} is not available under mlx.launch: each"):
            check_rank_flags(args)
    # The cache itself works under ranks: its budget and warm-up flags are accepted.
    check_rank_flags(build_parser().parse_args(["--prompt-cache-bytes", "1G", "--preload", "f"]))
    with pytest.raises(ValueError, match="--rank-timeout 0.0 is invalid"):
        check_rank_flags(build_parser().parse_args(["--rank-timeout", "0"]))
    check_rank_flags(build_parser().parse_args([]))


def test_a_prompt_lookup_drafter_travels_as_data() -> None:
    lookup = mg.PromptLookup(num_draft=5, max_ngram=4, min_ngram=1, measure_cost=False)
    settings = mg.GenerationSettings(seed=3, temperature=0.5, speculative=lookup)
    data = encode_settings(settings)
    assert data["speculative"] == {
        "prompt_lookup": {"num_draft": 5, "max_ngram": 4, "min_ngram": 1, "measure_cost": False}
    }
    back = _roundtrip(settings)
    assert back == settings and back.speculative == lookup  # every field of the dataclass
    assert isinstance(back.speculative, mg.PromptLookup)
    default = mg.GenerationSettings(speculative=mg.PromptLookup())
    assert _roundtrip(default).speculative == mg.PromptLookup()  # measure_cost=True travels too


def test_a_draft_model_is_refused_by_name(llama_dir) -> None:
    settings = mg.GenerationSettings(speculative=mg.DraftModel(mg.load(llama_dir), num_draft=2))
    with pytest.raises(NotData, match=r"speculative=DraftModel\(\.\.\.\).*its own draft model"):
        encode_settings(settings)


def test_rank_0_sends_a_lookup_drafter_only_when_it_does_not_time_its_rounds() -> None:
    from types import SimpleNamespace

    from mlx_gen.server.jobs import Failed, Job
    from mlx_gen.server.lockstep import LockstepWorker

    failed: list[Failed] = []
    leader = SimpleNamespace(_finish=lambda job, event: failed.append(event), _wire_id={},
                             _next_id=0)  # fmt: skip
    untimed = mg.GenerationSettings(seed=1, speculative=mg.PromptLookup(measure_cost=False))
    op = LockstepWorker._op(leader, "add", Job([1, 2], untimed, print))
    assert op[0] == "add" and decode_settings(op[3]) == untimed and failed == []
    timed = mg.GenerationSettings(seed=1, speculative=mg.PromptLookup())  # measure_cost=True
    assert LockstepWorker._op(leader, "add", Job([1, 2], timed, print)) is None
    assert failed[0].status == 400
    assert "measure_cost=True) cannot run on a distributed server" in failed[0].message
