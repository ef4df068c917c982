"""The per-step control tail alone: primitives dispatched and time, uncompiled against compiled.

    python benchmarks/bench_tail.py --vocabs 512,32000 --batches 1,8 --repeats 200

No model: random logits stand in for the forward pass. For each vocabulary size,
batch size and sampling mode, the tail with every control of the benchmark's
"controls" scenario (logit bias on 100 ids, suppress and begin-suppress tokens,
repetition penalty 1.1, top-5 logprobs raw and processed) is built as it was before
compilation (single sequence: ``StepTail(compiled=False)``; batch: the per-row path of
``mlx_gen.batch.step``) and as it is now (``StepTail``; the batch's compiled group).
Reported per step: the primitives in the evaluated graph (``mx.export_to_dot``; on a
GPU each is at least one kernel launch), the time to build the graph in Python, and
the time to evaluate it (min and median over ``--repeats`` steps).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import mlx.core as mx  # noqa: E402

from mlx_gen.batch.step import Row, _pack, _process, _sample  # noqa: E402
from mlx_gen.batch.tail import group_for, grouped  # noqa: E402
from mlx_gen.logprobs.report import LogprobRequest  # noqa: E402
from mlx_gen.plan import DecodePlan  # noqa: E402
from mlx_gen.processors import (  # noqa: E402
    BeginSuppressTokens,
    LogitBias,
    RepetitionPenalty,
    SuppressTokens,
)
from mlx_gen.sampling import SamplingParams  # noqa: E402
from mlx_gen.step_tail import StepTail  # noqa: E402


def plan(vocab: int, sampled: bool, seed: int) -> DecodePlan:
    processors = (
        SuppressTokens([5, 6, 7], vocab_size=vocab),
        BeginSuppressTokens([8, 9], steps=1, vocab_size=vocab),
        RepetitionPenalty(1.1),
        LogitBias({(1000 + i) % vocab: 0.5 for i in range(100)}, vocab_size=vocab),
    )
    sampling = SamplingParams(temperature=0.8, top_k=50, top_p=0.9) if sampled else SamplingParams()
    request = LogprobRequest(5, (), ("raw", "processed"))
    return DecodePlan(processors, sampling, frozenset({2}), 10**6, request, seed)


def primitives(*outputs) -> int:
    dot = io.StringIO()
    mx.export_to_dot(dot, *outputs)
    return sum("shape=rectangle" in line for line in dot.getvalue().splitlines())


def single_step(vocab: int, sampled: bool, compiled: bool):
    p = plan(vocab, sampled, 0)
    prompt = mx.array([3 + (7 * i) % (vocab - 3) for i in range(128)], dtype=mx.int32)
    tail = StepTail(
        p.processors,
        sampling=p.sampling,
        logprobs=p.logprobs,
        prompt_ids=prompt,
        seed=0,
        vocab_size=vocab,
        compiled=compiled,
    )
    history = {"step": 0, "generated": mx.zeros((0,), dtype=mx.int32)}

    def step(logits: mx.array):
        token, packed = tail(logits, history["step"], history["generated"])
        history["step"] += 1
        if tail.needs_generated:
            history["generated"] = mx.concatenate([history["generated"], token])
        return [token, packed, tail._state, tail._key]

    return step


def batch_step(vocab: int, batch: int, sampled: bool, compiled: bool):
    rows = [
        Row(i, plan(vocab, sampled, i), [3 + (5 * i + 7 * j) % (vocab - 3) for j in range(64)])
        for i in range(batch)
    ]

    def step(logits: mx.array):
        if compiled:
            group = group_for(rows, vocab)
            tokens, packed = group.step(logits)
            outs = [tokens, packed, group.state, *([group.keys] if sampled else [])]
        else:
            processed = _process(logits, rows)
            tokens, filtered = _sample(processed, rows)
            packed, _ = _pack(logits, filtered, tokens, rows)
            outs = [tokens, packed, *(r.key for r in rows if sampled)]
        for i, r in enumerate(rows):  # as BatchDecoder._keep does
            r.step += 1
            if not grouped(r):
                r.generated = mx.concatenate([r.generated, tokens[i : i + 1]])
        return outs

    return step


def measure(step, vocab: int, batch: int, repeats: int) -> dict:
    builds, evals, ops = [], [], 0
    for n in range(repeats + 5):
        logits = mx.random.normal((batch, vocab))
        mx.eval(logits)
        start = time.perf_counter()
        outs = step(logits)
        built = time.perf_counter()
        if n == 4:
            ops = primitives(*[o for o in outs if o is not None])
        mx.eval(outs)
        done = time.perf_counter()
        if n >= 5:  # the first steps trace and JIT-compile
            builds.append((built - start) * 1e6)
            evals.append((done - built) * 1e6)
    return {
        "primitives": ops,
        "build_us": (min(builds), statistics.median(builds)),
        "eval_us": (min(evals), statistics.median(evals)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocabs", default="512,32000")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--repeats", type=int, default=100)
    args = parser.parse_args()
    print(f"device {mx.default_device()}, mlx {mx.__version__}, {args.repeats} steps each")
    print(
        "| V | B | sampling | tail | primitives | build us (min / median) "
        "| eval us (min / median) |\n|---|---|---|---|---|---|---|"
    )
    for vocab in (int(v) for v in args.vocabs.split(",")):
        for batch in (int(b) for b in args.batches.split(",")):
            for sampled in (False, True):
                for compiled in (False, True):
                    if batch == 1:
                        step = single_step(vocab, sampled, compiled)
                    else:
                        step = batch_step(vocab, batch, sampled, compiled)
                    r = measure(step, vocab, batch, args.repeats)
                    print(
                        f"| {vocab} | {batch} | {'top-k/top-p' if sampled else 'greedy'} | "
                        f"{'compiled' if compiled else 'uncompiled'} | {r['primitives']} | "
                        f"{r['build_us'][0]:.0f} / {r['build_us'][1]:.0f} | "
                        f"{r['eval_us'][0]:.0f} / {r['eval_us'][1]:.0f} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
