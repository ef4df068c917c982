"""One rank of the distributed tests: load each model, run every control, write JSON.

Run under the launcher (``python -m mlx_gen.cli.launch -n 2 --backend ring -- python
tests/distributed_worker.py SPEC OUT``), each rank writes ``OUT/rank{r}.json``; imported
by the tests, :func:`run_checks` gives the single-process reference of the same calls.
SPEC is a JSON file: ``{"models": {name: folder}, "fail": null | "start" | "generate"}``;
``fail`` makes rank 1 exit before joining the group, or get killed mid-generation.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import mlx.core as mx

import mlx_gen as mg
from mlx_gen import GenerationSettings as S
from mlx_gen.loading.distributed import parameter_bytes

PROMPT = "Once upon a time"


def _lp(report: Any) -> dict[str, Any]:
    return {
        "token": report.token,
        "logprob": report.logprob,
        "rank": report.rank,
        "top": [list(p) for p in report.top],
    }


def _run(model: Any, settings: Any) -> dict[str, Any]:
    result = mg.generate(model, PROMPT, settings=settings)
    return {
        "tokens": result.token_ids,
        "text": result.text,
        "finish_reason": result.finish_reason,
        "logprobs": [{mode: _lp(r) for mode, r in step.items()} for step in result.logprobs],
    }


def _no_repeat(logits: mx.array, ctx: mg.ProcessorContext) -> mx.array:
    """A custom processor reading its context: never the previous token again."""
    if ctx.step == 0:
        return logits
    return mx.where(mx.arange(logits.shape[-1]) == ctx.generated_ids[-1], -mx.inf, logits)


def model_checks(model: Any) -> dict[str, Any]:
    """Every control on ``model``; the same calls on every rank and in one process."""
    both = ("raw", "processed")
    eos = min(model.generation_config.eos_token_ids)
    runs: dict[str, Any] = {}
    runs["greedy"] = _run(
        model, S(max_tokens=12, temperature=0, logprobs=3, logprobs_modes=both, ignore_eos=True)
    )
    first = runs["greedy"]["tokens"][0]
    runs["sampled"] = _run(
        model,
        S(
            max_tokens=12,
            temperature=0.9,
            top_k=40,
            top_p=0.95,
            seed=11,
            logprobs=3,
            logprobs_modes=both,
            ignore_eos=True,
        ),
    )
    runs["controls"] = _run(
        model,
        S(
            max_tokens=12,
            temperature=0.8,
            seed=5,
            logprobs=2,
            logprobs_modes=both,
            logit_bias={5: 3.0, 7: -float("inf")},
            suppress_tokens=[9, 10],
            begin_suppress_tokens=[first],
            ignore_eos=True,
        ),
    )
    runs["min_new_tokens"] = _run(
        model,
        S(
            max_tokens=10,
            temperature=0,
            logit_bias={eos: 100.0},
            min_new_tokens=5,
            eos_token_ids=[eos],
            logprobs=0,
            logprobs_modes=both,
        ),
    )
    runs["stop"] = _run(
        model, S(max_tokens=12, temperature=0, ignore_eos=True, stop=[runs["greedy"]["text"][4:7]])
    )
    runs["unseeded"] = _run(model, S(max_tokens=16, temperature=3.0, ignore_eos=True))
    # The rest of the control matrix (tests/test_control_matrix.py) on 2 ranks.
    runs["penalties"] = _run(
        model,
        S(max_tokens=12, temperature=0, ignore_eos=True, repetition_penalty=1.3,
          presence_penalty=0.4, frequency_penalty=0.3, logprobs=2, logprobs_modes=both),
    )  # fmt: skip
    runs["custom_processor"] = _run(
        model, S(max_tokens=12, temperature=0, ignore_eos=True, logits_processors=[_no_repeat])
    )
    runs["constraint"] = _run(
        model, S(max_tokens=12, temperature=0, constraint=mg.Regex("[a-z ]+"), logprobs=2)
    )
    lookup = mg.PromptLookup(num_draft=3, min_ngram=1, measure_cost=False)
    runs["prompt_lookup"] = _run(
        model, S(max_tokens=12, temperature=0, ignore_eos=True, speculative=lookup, logprobs=2)
    )
    runs["constraint_lookup"] = _run(
        model, S(max_tokens=12, temperature=0, constraint=mg.Regex("[a-z ]+"), speculative=lookup)
    )
    batch = mg.generate_batch(
        model,
        [PROMPT, "The end"],
        settings=S(max_tokens=6, temperature=0.7, seed=3, ignore_eos=True, logprobs=2),
    )
    for i, result in enumerate(batch):
        runs[f"batch{i}"] = {
            "tokens": result.token_ids,
            "text": result.text,
            "finish_reason": result.finish_reason,
            "logprobs": [{m: _lp(r) for m, r in step.items()} for step in result.logprobs],
        }
    scored = mg.score(model, PROMPT, runs["greedy"]["text"], top_n=2)
    runs["score"] = {
        "tokens": scored.token_ids,
        "text": "",
        "finish_reason": None,
        "logprobs": [{"raw": _lp(r)} for r in scored.logprobs],
    }
    return runs


def run_checks(models: dict[str, str]) -> dict[str, Any]:
    """Load each model (sharded when launched as several ranks) and run the checks."""
    out: dict[str, Any] = {}
    for name, folder in models.items():
        mx.reset_peak_memory()
        model = mg.load(folder)
        out[name] = {
            "rank": model.rank,
            "size": 1 if model.group is None else model.group.size(),
            "parameter_bytes": parameter_bytes(model.model),
            "active_bytes": mx.get_active_memory(),
            "peak_bytes": mx.get_peak_memory(),
            "runs": model_checks(model),
        }
        del model
    return out


def main(spec_path: str, out_dir: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    rank = int(os.environ.get("MLX_RANK", "0"))
    if spec.get("fail") == "start" and rank == 1:
        sys.exit("rank 1 failed to start on purpose")
    if spec.get("fail") == "generate" and rank == 1:
        model = mg.load(next(iter(spec["models"].values())))
        del model  # killed mid-run, while rank 0 waits in a collective
        os.kill(os.getpid(), signal.SIGKILL)
    result = run_checks(spec["models"])
    tmp = Path(out_dir) / f"rank{rank}.json.tmp"
    tmp.write_text(json.dumps(result))
    tmp.rename(Path(out_dir) / f"rank{rank}.json")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
