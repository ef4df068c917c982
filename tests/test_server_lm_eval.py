"""lm-eval's ``local-completions`` against the server scores what ``mlx_gen.score`` scores.

The task is tests/lm_eval_tiny (a YAML + JSONL, multiple choice); lm-eval takes the
tokenizer from the server (``/tokenizer_info``, ``/tokenize``), sends token-id prompts
with ``echo`` + ``logprobs=1`` and reads the prompt tokens' log-likelihoods. Offline.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import mlx_gen as mg
from tests.conftest import STORIES
from tests.serving import running_server

TASK_DIR = Path(__file__).resolve().parent / "lm_eval_tiny"


def test_lm_eval_loglikelihoods_equal_score(monkeypatch):
    if not (STORIES / "config.json").exists():
        pytest.skip(f"{STORIES} is absent")
    evaluator = pytest.importorskip("lm_eval.evaluator")
    from lm_eval.tasks import TaskManager

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(TASK_DIR)  # the YAML names its JSONL relative to this folder
    model = mg.load(STORIES)
    with running_server(model, name="stories", max_batch_size=4) as base:
        results = evaluator.simple_evaluate(
            model="local-completions",
            model_args={
                "model": "stories",
                "base_url": base + "/v1/completions",
                "tokenizer_backend": "remote",
                "num_concurrent": 1,
                "max_retries": 1,
            },
            tasks=["mlx_gen_tiny"],
            task_manager=TaskManager(include_path=str(TASK_DIR)),
            log_samples=True,
        )
    samples = results["samples"]["mlx_gen_tiny"]
    docs = [json.loads(line) for line in (TASK_DIR / "tiny.jsonl").read_text().splitlines()]
    assert len(samples) == len(docs)
    tok = model.tokenizer

    def encode(text: str) -> list[int]:
        return tok.encode(text, add_special_tokens=False)

    checked = 0
    for sample in samples:
        doc = sample["doc"]
        for choice, resp in zip(doc["choices"], sample["resps"], strict=True):
            whole, context = encode(doc["context"] + choice), encode(doc["context"])
            ref = mg.score(model, context, whole[len(context) :])
            loglikelihood, is_greedy = resp[0]
            np.testing.assert_allclose(loglikelihood, ref.total, atol=1e-4)
            assert is_greedy == all(r.rank == 1 for r in ref.logprobs)
            checked += 1
    assert checked == sum(len(d["choices"]) for d in docs)
    assert 0.0 <= results["results"]["mlx_gen_tiny"]["acc,none"] <= 1.0
