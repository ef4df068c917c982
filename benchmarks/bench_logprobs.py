"""What top-n logprob reports cost during decode, measured in one process.

    python benchmarks/bench_logprobs.py --model 110M --repeats 12 \
        --out benchmarks/results/logprobs.json

The cost is a few percent of a step, smaller than the run-to-run scatter of separate
processes on a shared machine, so this benchmark interleaves the two settings inside
one process: ``plain`` (greedy, no reports) and ``logprobs`` (greedy, top-``n``
reports in both modes, raw and processed), alternating on every repeat, each repeat
a fresh ``stream_generate`` call on the same prompt. Decode time per token is measured
after the first token (prefill excluded). Reported: min and median ms per token for
each setting and the cost as a share of plain decode, from the mins and from the
medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import mlx.core as mx  # noqa: E402
from presets import write_preset  # noqa: E402

import mlx_gen as mg  # noqa: E402


def _ms_per_token(model: mg.LoadedModel, prompt: list[int], settings: mg.GenerationSettings):
    chunks = mg.stream_generate(model, prompt, settings=settings)
    next(chunks)
    start = time.perf_counter()
    n = sum(1 for _ in chunks)
    return (time.perf_counter() - start) / n * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="110M", help="a preset name or a model folder")
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--gen", type=int, default=48)
    parser.add_argument("--top-n", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--root", type=Path, default=HERE / ".models")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    folder = Path(args.model) if Path(args.model).is_dir() else write_preset(args.model, args.root)
    model = mg.load(folder)
    prompt = [3 + (7 * i) % (model.vocab_size - 3) for i in range(args.prompt_len)]
    base = dict(max_tokens=args.gen, ignore_eos=True)
    settings = {
        "plain": mg.GenerationSettings(**base),
        "logprobs": mg.GenerationSettings(
            **base, logprobs=args.top_n, logprobs_modes=("raw", "processed")
        ),
    }
    for s in settings.values():  # warm-up: compile and allocate once
        _ms_per_token(model, prompt, s)
    times: dict[str, list[float]] = {k: [] for k in settings}
    for r in range(args.repeats):
        order = list(settings) if r % 2 == 0 else list(reversed(settings))
        for name in order:
            times[name].append(_ms_per_token(model, prompt, settings[name]))
    summary = {
        k: {"min": min(v), "median": statistics.median(v), "runs": v} for k, v in times.items()
    }
    cost_min = summary["logprobs"]["min"] / summary["plain"]["min"] - 1
    cost_median = summary["logprobs"]["median"] / summary["plain"]["median"] - 1
    print(
        f"model {args.model}, {mx.default_device()}, top-{args.top_n}, both modes, "
        f"{args.repeats} repeats"
    )
    for name, s in summary.items():
        print(f"{name:9s} min {s['min']:7.2f}  median {s['median']:7.2f} ms/token")
    print(f"logprob cost: {cost_min:+.1%} (mins), {cost_median:+.1%} (medians)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        record = dict(
            vars(args), root=str(args.root), out=str(args.out), device=str(mx.default_device())
        )
        record.update(summary=summary, cost_min=cost_min, cost_median=cost_median)
        args.out.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
