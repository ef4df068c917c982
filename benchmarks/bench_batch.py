"""Batched decode throughput: mlx_gen's generate_batch against mlx-lm's batch_generate.

    python benchmarks/bench_batch.py --out benchmarks/results/batch.json
    python benchmarks/bench_batch.py --models stories260K,110M --batch-sizes 8 \
        --scenarios plain,controls --repeats 3
    python benchmarks/bench_batch.py --quick --out /tmp/batch.json   # smoke test

Models: a random float32 Llama preset (default 110M: dim 768, 12 layers, 12 heads,
vocab 32000, intermediate 2048) written in Hugging Face layout to a temporary folder,
``stories260K`` (the real checkpoint, ``--stories``) or a model folder. Every
measurement runs in a fresh process (this file with ``--worker``); engines, scenarios
and batch sizes are interleaved and the whole sweep repeated. Generation is greedy
with EOS ignored, so every row yields ``--gen`` tokens. Scenario ``controls`` is
mlx_gen with every control of ``worker.controls`` on each row (logit bias on 100 ids,
suppress and begin-suppress tokens, repetition penalty, top-5 logprobs raw and
processed), compared with mlx-lm plain.

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
from worker import controls  # noqa: E402

ENGINES = ("mlx_gen", "mlx_lm")
# (engine, scenario) measured: mlx-lm has no suppression or logprob reports, so its plain
# run is the baseline for mlx_gen's controls.
VARIANTS = (("mlx_gen", "plain"), ("mlx_gen", "controls"), ("mlx_lm", "plain"))


def prompts_for(batch: int, prompt_len: int, vocab: int) -> list[list[int]]:
    """``batch`` fixed prompts, lengths spread over ``[prompt_len / 2, prompt_len]``."""
    import random

    rng = random.Random(0)
    lengths = [
        max(1, prompt_len // 2 + (i * prompt_len // 2) // max(batch - 1, 1)) for i in range(batch)
    ]
    return [[rng.randrange(3, vocab) for _ in range(n)] for n in lengths]


def _mlx_gen_runner(model_dir: str, batch: int | None, scenario: str = "plain"):
    import mlx_gen as mg
    from mlx_gen.batch.generation import generate_batch

    model = mg.load(model_dir)
    extra = controls(model.vocab_size) if scenario == "controls" else {}

    def run(prompts: list[list[int]], n: int) -> list[list[int]]:
        settings = mg.GenerationSettings(max_tokens=n, ignore_eos=True, temperature=0.0, **extra)
        if batch is None:
            return [mg.generate(model, prompts[0], settings=settings).token_ids]
        return [r.token_ids for r in generate_batch(model, prompts, settings=settings)]

    return run, model.vocab_size


def _mlx_lm_runner(model_dir: str, batch: int | None, scenario: str = "plain"):
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
    run, vocab = runner(args.model, batch, args.scenario)
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
                "scenario": args.scenario,
                "model_name": args.model_name,
                "batch": args.batch,
                "t_first_s": t1,
                "t_gen_s": tn,
                "decode_tps": rows * (args.gen - 1) / max(tn - t1, 1e-9),
                "first_row": tokens[0],
                "environment": environment(),
            }
        )
    )


def measure(
    engine: str, scenario: str, batch: int, model: tuple[str, Path], args: argparse.Namespace
) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--engine",
        engine,
        "--scenario",
        scenario,
        "--model-name",
        model[0],
        "--batch",
        str(batch),
        "--model",
        str(model[1]),
        "--gen",
        str(args.gen),
        "--prompt-len",
        str(args.prompt_len),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"worker failed: {' '.join(cmd)}\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cell(runs: list[dict], model: str, variant: tuple[str, str], batch: int) -> list[float]:
    return sorted(
        r["decode_tps"]
        for r in runs
        if (r["model_name"], r["engine"], r["scenario"], r["batch"]) == (model, *variant, batch)
    )


def summarize(runs: list[dict], models: list[str], sizes: list[int], variants) -> dict:
    """Per model and batch size: each variant's median (and runs), ratios to mlx-lm plain."""
    out: dict = {}
    for model in models:
        for batch in [*sizes, 0]:
            cell: dict = {}
            for variant in variants:
                values = _cell(runs, model, variant, batch)
                if values:
                    cell["/".join(variant)] = {"median": statistics.median(values), "runs": values}
            base = cell.get("mlx_lm/plain")
            for name, value in cell.items():
                if base and name != "mlx_lm/plain":
                    value["over_mlx_lm_plain"] = value["median"] / base["median"]
            firsts = {
                e: next(
                    (
                        r["first_row"]
                        for r in runs
                        if (r["model_name"], r["engine"], r["scenario"], r["batch"])
                        == (model, e, "plain", batch)
                    ),
                    None,
                )
                for e in ENGINES
            }
            cell["same_tokens"] = firsts["mlx_gen"] == firsts["mlx_lm"]
            out[f"{model}/{'single' if batch == 0 else batch}"] = cell
    return out


def table(summary: dict, models: list[str], sizes: list[int], variants) -> str:
    names = ["/".join(v) for v in variants]
    lines = [
        "| model | batch | "
        + " | ".join(f"{n} tok/s (runs)" for n in names)
        + " | "
        + " | ".join(f"{n} / mlx_lm plain" for n in names if n != "mlx_lm/plain")
        + " | same tokens (row 0) |",
        "|---|---|" + "---|" * (2 * len(names)),
    ]
    for model in models:
        for batch in [*(str(b) for b in sizes), "single"]:
            c = summary[f"{model}/{batch}"]
            cells = [
                f"{c[n]['median']:.1f} ({', '.join(f'{x:.0f}' for x in c[n]['runs'])})"
                if n in c
                else "-"
                for n in names
            ]
            ratios = [
                f"{c[n]['over_mlx_lm_plain']:.2f}x" if "over_mlx_lm_plain" in c.get(n, {}) else "-"
                for n in names
                if n != "mlx_lm/plain"
            ]
            lines.append(
                f"| {model} | {batch} | "
                + " | ".join(cells)
                + " | "
                + " | ".join(ratios)
                + f" | {c['same_tokens']} |"
            )
    return "\n".join(lines)


def sweep(args, models: dict[str, Path], sizes: list[int], variants) -> list[dict]:
    runs = []
    for r in range(args.repeats):
        for name, folder in models.items():
            for batch in [*sizes, 0]:  # 0: the single-sequence API
                for engine, scenario in variants if r % 2 == 0 else variants[::-1]:
                    runs.append(measure(engine, scenario, batch, (name, folder), args))
                    print(
                        f"repeat {r} {name} batch {batch or 'single'} {engine} {scenario}: "
                        f"{runs[-1]['decode_tps']:.1f} tok/s",
                        file=sys.stderr,
                        flush=True,
                    )
    return runs


def model_folders(names: list[str], tmp: Path, stories: Path) -> dict[str, Path]:
    """A folder per model name: a preset written under ``tmp``, stories260K, or a folder."""
    out = {}
    for name in names:
        if name == "stories260K":
            if not (stories / "config.json").exists():
                raise SystemExit(f"error: stories260K not found at {stories}; pass --stories DIR")
            out[name] = stories
        elif name in PRESETS:
            out[name] = write_preset(name, tmp)
        elif Path(name).is_dir():
            out[name] = Path(name)
        else:
            raise SystemExit(f"error: unknown model {name!r}; valid: {', '.join(PRESETS)}, ...")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    parser.add_argument("--quick", action="store_true", help="tiny model, sizes 1,4, 8 tokens")
    parser.add_argument("--models", default="110M", help="presets, stories260K or folders")
    parser.add_argument("--scenarios", default="plain", help="plain and/or controls")
    parser.add_argument(
        "--stories", type=Path, default=HERE.parents[1] / "shared" / "models" / "stories260K"
    )
    parser.add_argument("--batch-sizes", default="1,4,16")
    parser.add_argument("--gen", type=int, default=64)
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--engine", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--model-name", help=argparse.SUPPRESS)
    parser.add_argument("--scenario", default="plain", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.quick:
        args.batch_sizes, args.gen, args.prompt_len, args.repeats = "1,4", 8, 8, 1
    if args.out and args.out.exists() and not args.force:
        raise SystemExit(f"error: {args.out} exists; pass --force to replace it")
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    names = ["tiny"] if args.quick else args.models.split(",")
    scenarios = args.scenarios.split(",")
    variants = [v for v in VARIANTS if v[1] in scenarios]
    with tempfile.TemporaryDirectory() as tmp:
        runs = sweep(args, model_folders(names, Path(tmp), args.stories), sizes, variants)
    summary = summarize(runs, names, sizes, variants)
    print(table(summary, names, sizes, variants))
    if args.out:
        report = {
            "config": {
                "models": names,
                "gen": args.gen,
                "prompt_len": args.prompt_len,
                "repeats": args.repeats,
                "batch_sizes": sizes,
                "scenarios": scenarios,
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
