"""BatchDecoder.add: prompts that arrive while others decode equal their single runs."""

from __future__ import annotations

import pytest

import mlx_gen as mg
from mlx_gen.batch.decode import BatchDecoder
from mlx_gen.plan import DecodePlan
from tests.checkpoints import llama_config, write_checkpoint

S = mg.GenerationSettings


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("add") / "llama"
    write_checkpoint(folder, llama_config(eos_token_id=2), generation_config={"eos_token_id": 2})
    return mg.load(folder)


def test_rows_added_between_steps_equal_single_runs_and_are_forgotten(model):
    requests = [
        ([1, 5, 9, 30], S(max_tokens=9, ignore_eos=True)),
        ([1, 77], S(max_tokens=6, temperature=1.0, seed=4, ignore_eos=True)),
        ([1, 8, 8, 8, 8, 8, 8], S(max_tokens=7, top_k=3, temperature=0.9, seed=1, ignore_eos=True)),
        ([1, 40, 41], S(max_tokens=0)),
    ]
    decoder = BatchDecoder(model, [], [], batch_size=2)
    assert decoder.done
    got: dict[int, list[int]] = {}
    indices = []
    for ids, settings in requests:  # one new prompt per step, at most 2 rows at once
        indices.append(decoder.add(ids, DecodePlan.build(model, settings)))
        for index, out in decoder.step():
            got.setdefault(index, []).append(out.token)
    while not decoder.done:
        for index, out in decoder.step():
            got.setdefault(index, []).append(out.token)
    assert indices == [0, 1, 2, 3]
    for index, (ids, settings) in zip(indices, requests, strict=True):
        want = [t.token for t in mg.generate_tokens(model, ids, settings)]
        assert got.get(index, []) == want
    decoder.add([1, 2], DecodePlan.build(model, S(max_tokens=1)))
    assert list(decoder._rows) == [4]  # finished rows are forgotten when a new one arrives
    with pytest.raises(ValueError, match="empty"):
        decoder.add([], DecodePlan.build(model, S()))
