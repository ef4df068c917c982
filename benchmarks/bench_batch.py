"""Batched decode throughput: mlx_gen's generate_batch against mlx-lm's batch_generate.

    python benchmarks/bench_batch.py --out benchmarks/results/batch.json
    python benchmarks/bench_batch.py --quick --out /tmp/batch.json   # smoke test

A random float32 Llama (default: dim 768, 12 layers, 12 heads, vocab 32000,
intermediate 2048, about 110M parameters) is written in Hugging Face layout to a
temporary folder. Every measurement runs in a fresh process (this file with
``--worker``); engines and batch sizes are interleaved and the whole sweep repeated.
Generation is greedy with EOS ignored, so every row yields ``--gen`` tokens.

Both engines are timed the same way, from outside: one call generating 1 token and one
generating ``--gen`` tokens on the same prompts; aggregate decode tokens/s is
``B * (gen - 1) / (t_gen - t_1)`` (prefill cancels out). "single" is the
single-sequence path of each engine (``mlx_gen.generate``, mlx-lm's ``generate_step``,
which ignores EOS) on one prompt: the baseline batching is meant to beat.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from presets import PRESETS, write_preset  # noqa: E402

ENGINES = ("mlx_gen", "mlx_lm")


def prompts_for(batch: int, prompt_len: int, vocab: int) -> list[list[int]]:
    """``batch`` fixed prompts, lengths spread over ``[prompt_len / 2, prompt_len]``."""
    import random

    rng = random.Random(0)
    lengths = [
        max(1, prompt_len // 2 + (i * prompt_len // 2) // max(batch - 1, 1)) for i in range(batch)
    ]
    return [[rng.randrange(3, vocab) for _ in range(n)] for n in lengths]


def _mlx_gen_runner(model_dir: str, batch: int | None):
    import mlx_gen as mg
    from mlx_gen.batch.generation import generate_batch

    model = mg.load(model_dir)

    def run(prompts: list[list[int]], n: int) -> list[list[int]]:
        settings = mg.GenerationSettings(max_tokens=n, ignore_eos=True, temperature=0.0)
        if batch is None:
            return [mg.generate(model, prompts[0], settings=settings).token_ids]
        return [r.token_ids for r in generate_batch(model, prompts, settings=settings)]

    return run, model.vocab_size


def _mlx_lm_runner(model_dir: str, batch: int | None):
    import mlx.core as mx
    import mlx_lm
    from mlx_lm.generate import batch_generate, generate_step

    model, tokenizer = mlx_lm.load(model_dir)

    class NoEos:  # batch_generate stops on tokenizer.eos_token_ids: ignore EOS.
        eos_token_ids: list[int] = []

        def decode(self, ids: list[int]) -> str:
            return tokenizer.decode(ids)

    def run(prompts: list[list[int]], n: int) -> list[list[int]]:
        if batch is None:  # generate_step never stops on EOS by itself
            steps = generate_step(mx.array(prompts[0]), model, max_tokens=n)
            return [[int(t) for t, _ in steps]]
        out = batch_generate(
            model,
            NoEos(),
            prompts,
            max_tokens=n,
            return_token_ids=True,
            prefill_batch_size=len(prompts),
            completion_batch_size=len(prompts),
        )
        return out.token_ids

    return run, model.args.vocab_size


def environment() -> dict:
    import mlx.core as mx

    backend = (
        "metal"
        if mx.metal.is_available()
        else (
            "cuda" if getattr(getattr(mx, "cuda", None), "is_available", lambda: False)() else "cpu"
        )
    )
    maps = Path("/proc/self/maps")
    mapped = maps.read_text().split() if maps.exists() else []
    blas = sorted({Path(m).name for m in mapped if "blas" in m.lower() and m.startswith("/")})
    preload = os.environ.get("LD_PRELOAD", "")
    return {
        "mlx": mx.__version__,
        "backend": backend,
        "device": str(mx.default_device()),
        "LD_PRELOAD": preload,
        "openblas_preloaded": "openblas" in preload.lower(),
        "blas_libraries_mapped": blas,
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", ""),
        "cores": os.cpu_count(),
    }


def worker(args: argparse.Namespace) -> None:
    """One measurement; prints one JSON line."""
    batch = None if args.batch == 0 else args.batch
    runner = _mlx_gen_runner if args.engine == "mlx_gen" else _mlx_lm_runner
    run, vocab = runner(args.model, batch)
    prompts = prompts_for(batch or 1, args.prompt_len, vocab)
    run(prompts, 4)  # warm-up: allocations, kernels
    start = time.perf_counter()
    run(prompts, 1)
    t1 = time.perf_counter() - start
    start = time.perf_counter()
    tokens = run(prompts, args.gen)
    tn = time.perf_counter() - start
    rows = batch or 1
    assert sum(len(t) for t in tokens) == rows * args.gen, "a row stopped early"
    print(
        json.dumps(
            {
                "engine": args.engine,
                "batch": args.batch,
                "t_first_s": t1,
                "t_gen_s": tn,
                "decode_tps": rows * (args.gen - 1) / max(tn - t1, 1e-9),
                "first_row": tokens[0],
                "environment": environment(),
            }
        )
    )


def measure(engine: str, batch: int, model: Path, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--engine",
        engine,
        "--batch",
        str(batch),
        "--model",
        str(model),
        "--gen",
        str(args.gen),
        "--prompt-len",
        str(args.prompt_len),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"worker failed: {' '.join(cmd)}\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def summarize(runs: list[dict], sizes: list[int]) -> dict:
    def median(engine: str, batch: int) -> float:
        return statistics.median(
            r["decode_tps"] for r in runs if r["engine"] == engine and r["batch"] == batch
        )

    out: dict = {}
    for batch in [*sizes, 0]:
        cell = {e: median(e, batch) for e in ENGINES}
        cell["ratio"] = cell["mlx_gen"] / cell["mlx_lm"]
        firsts = {
            e: next(r["first_row"] for r in runs if r["engine"] == e and r["batch"] == batch)
            for e in ENGINES
        }
        cell["same_tokens"] = firsts["mlx_gen"] == firsts["mlx_lm"]
        out["single" if batch == 0 else str(batch)] = cell
    top = str(max(sizes))
    out[f"batch{top}_over_single"] = {e: out[top][e] / out["single"][e] for e in ENGINES}
    return out


def table(summary: dict, sizes: list[int]) -> str:
    lines = [
        "| batch | mlx_gen tok/s | mlx-lm tok/s | mlx_gen / mlx-lm | same tokens (row 0) |",
        "|---|---|---|---|---|",
    ]
    for key in [*(str(b) for b in sizes), "single"]:
        c = summary[key]
        lines.append(
            f"| {key} | {c['mlx_gen']:.1f} | {c['mlx_lm']:.1f} | {c['ratio']:.2f}x | "
            f"{c['same_tokens']} |"
        )
    top = max(sizes)
    over = summary[f"batch{top}_over_single"]
    lines.append(
        f"\nbatch {top} / single-sequence: mlx_gen {over['mlx_gen']:.2f}x, "
        f"mlx-lm {over['mlx_lm']:.2f}x"
    )
    return "\n".join(lines)


def sweep(args: argparse.Namespace, sizes: list[int], model: Path) -> list[dict]:
    runs = []
    for r in range(args.repeats):
        for batch in [*sizes, 0]:  # 0: the single-sequence API
            for engine in ENGINES if r % 2 == 0 else ENGINES[::-1]:
                runs.append(measure(engine, batch, model, args))
                last = runs[-1]
                print(
                    f"repeat {r} batch {batch or 'single'} {engine}: "
                    f"{last['decode_tps']:.1f} tok/s",
                    file=sys.stderr,
                    flush=True,
                )
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    parser.add_argument("--quick", action="store_true", help="tiny model, sizes 1,4, 8 tokens")
    parser.add_argument("--batch-sizes", default="1,4,16")
    parser.add_argument("--gen", type=int, default=64)
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--engine", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.quick:
        args.batch_sizes, args.gen, args.prompt_len, args.repeats = "1,4", 8, 8, 1
    if args.out and args.out.exists() and not args.force:
        raise SystemExit(f"error: {args.out} exists; pass --force to replace it")
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    preset = "tiny" if args.quick else "110M"
    with tempfile.TemporaryDirectory() as tmp:
        runs = sweep(args, sizes, write_preset(preset, Path(tmp)))
    summary = summarize(runs, sizes)
    print(table(summary, sizes))
    if args.out:
        report = {
            "config": {
                "arch": PRESETS[preset],
                "gen": args.gen,
                "prompt_len": args.prompt_len,
                "repeats": args.repeats,
                "batch_sizes": sizes,
                "greedy": True,
                "ignore_eos": True,
            },
            "environment": runs[0]["environment"],
            "summary": summary,
            "runs": runs,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = args.out.with_name(args.out.name + ".tmp")
        tmp_out.write_text(json.dumps(report, indent=1))
        tmp_out.replace(args.out)


if __name__ == "__main__":
    main()
