"""GenerationSettings refuses values of the wrong type with a ValueError naming the field.

Before, JSONL lines or API callers got ``2.5`` tokens, ``True`` as a seed, an endless
run for ``max_tokens: 1e999`` (JSON's inf) and ``TypeError``/``RuntimeError`` from deep
inside a processor for a lone int where a list of ids belongs (107 such cases).
"""

from __future__ import annotations

import numpy as np
import pytest

import mlx_gen as mg

BAD = [
    ("max_tokens", 2.5), ("max_tokens", float("inf")), ("max_tokens", True), ("max_tokens", "3"),
    ("max_tokens", 2**40), ("top_k", 1.0), ("seed", True), ("logprobs", False),
    ("temperature", "1"), ("temperature", float("nan")), ("temperature", 10**30),
    ("ignore_eos", "yes"), ("include_stop_str", 1),
    ("suppress_tokens", 3), ("suppress_tokens", [1.5]), ("allowed_token_ids", True),
    ("eos_token_ids", ["2"]), ("extra_eos_token_ids", None), ("logprob_token_ids", [[1]]),
    ("begin_suppress_tokens", [-1]), ("stop", [1]), ("bad_words", 5), ("bad_words", [1]),
    ("logit_bias", [1, 2]), ("logit_bias", {"1": 2.0}), ("logit_bias", {1: float("nan")}),
    ("sequence_bias", {(): 1.0}), ("sequence_bias", {(1,): "x"}),
    ("logits_processors", [1]), ("stopping_criteria", print),
    ("suppress_tokens", iter([1, 2])),
]  # fmt: skip


@pytest.mark.parametrize(("field", "value"), BAD, ids=[f"{f}={v!r}"[:40] for f, v in BAD])
def test_a_wrong_type_is_named(field, value):
    with pytest.raises(ValueError, match=rf"^{field}=.* is invalid \(expected "):
        mg.GenerationSettings(**{field: value})


def test_right_types_pass_including_numpy_scalars():
    settings = mg.GenerationSettings(
        max_tokens=np.int64(3), temperature=np.float32(0.5), suppress_tokens=(1, np.int64(2)),
        logit_bias={np.int64(4): float("-inf"), 5: 2}, sequence_bias={(1, 2): -1.0},
        bad_words=["x", [3, 4]], stop=("a",), logits_processors=(lambda lg, ctx: lg,),
    )  # fmt: skip
    assert settings.max_tokens == 3 and settings.logit_bias[5] == 2
