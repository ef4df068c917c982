"""mlx_gen against mlx-lm on the same weights, side by side, in one run.

    python benchmarks/bench_generate.py --models stories260K,110M --rounds 3

Every measurement runs in a fresh process (benchmarks/worker.py). Rounds are the
outer loop: each round measures every cell (model, prompt length, scenario, engine),
engines alternating order, so every cell samples the same stretches of a noisy
machine. The full table reports medians over rounds and the mlx_gen/mlx-lm ratio
(above 1 means mlx_gen is faster; for time to first token and memory, below 1 is
better); the ratio table compares decode tokens/s, with the spread (min-max of the
rounds) of each engine. Generation is greedy (or seeded sampling) with EOS ignored so
both engines produce the same number of tokens.

Models: the random-weight presets of ``presets.py`` (written once under ``--root``),
``stories260K`` (the real checkpoint, ``--stories`` folder), ``smollm2`` (the
embedded GGUF, needs its package) or any model folder. Needs neither OpenBLAS nor
SmolLM2; runs on whatever backend MLX has (CPU, Metal, CUDA).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import mlx.core as mx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from presets import PRESETS, write_preset  # noqa: E402

ENGINES = ("mlx_gen", "mlx_lm")
METRICS = ("prefill_tps", "decode_tps", "ttft_s", "peak_gb")


def environment() -> dict:
    """What the numbers depend on: backend, BLAS preload, versions, CPU."""
    import mlx_lm

    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else platform.processor()
    )
    return {
        "backend": backend(),
        "device": str(mx.default_device()),
        "mlx": mx.__version__,
        "mlx_lm": mlx_lm.__version__,
        "python": platform.python_version(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "LD_PRELOAD": os.environ.get("LD_PRELOAD", ""),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", ""),
    }


def backend() -> str:
    """``metal``, ``cuda`` or ``cpu``: where MLX runs here."""
    if mx.metal.is_available():
        return "metal"
    cuda = getattr(mx, "cuda", None)
    return "cuda" if cuda is not None and cuda.is_available() else "cpu"


def vocab_of(source: str) -> int:
    """The vocabulary size in a model folder's config.json (32000 if there is none)."""
    config = Path(source) / "config.json"
    if not config.exists():
        return 32000
    data = json.loads(config.read_text())
    return int(data.get("vocab_size") or data.get("text_config", {}).get("vocab_size", 32000))


def model_folder(name: str, root: Path, stories: Path) -> tuple[str, str]:
    """(mlx_gen source, mlx-lm source) for a preset, stories260K, SmolLM2 or a folder."""
    if name == "stories260K":
        if not (stories / "config.json").exists():
            raise SystemExit(f"error: stories260K not found at {stories}; pass --stories DIR")
        return str(stories), str(stories)
    if Path(name).is_dir():
        return name, name
    if name in PRESETS:
        folder = str(write_preset(name, root))
        return folder, folder
    if name == "smollm2":  # mlx-lm cannot read GGUF: it gets the same weights converted.
        from mlx_gen.convert.main import convert

        folder = root / "smollm2-q4"
        if not folder.exists():
            convert(None, folder)
        return "default", str(folder)
    raise SystemExit(
        f"error: unknown model {name!r}; valid: {', '.join(PRESETS)}, stories260K, smollm2, "
        "or a model folder"
    )


def measure(engine: str, model: str, prompt_len: int, gen: int, scenario: str, vocab: int) -> dict:
    cmd = [
        sys.executable,
        str(HERE / "worker.py"),
        "--engine",
        engine,
        "--model",
        model,
        "--prompt-len",
        str(prompt_len),
        "--gen",
        str(gen),
        "--scenario",
        scenario,
        "--vocab",
        str(vocab),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"worker failed: {' '.join(cmd)}\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def summarize(runs: dict[str, list[dict]]) -> dict:
    out = {}
    for engine, rs in runs.items():
        out[engine] = {
            m: {
                "median": statistics.median(r[m] for r in rs),
                "min": min(r[m] for r in rs),
                "max": max(r[m] for r in rs),
            }
            for m in (*METRICS, "load_s")
        }
    out["ratio"] = {
        m: out["mlx_gen"][m]["median"] / out["mlx_lm"][m]["median"] for m in (*METRICS, "load_s")
    }
    return out


CELLS = (
    ("prefill_tps", "{:.1f}"),
    ("decode_tps", "{:.1f}"),
    ("ttft_s", "{:.3f}"),
    ("peak_gb", "{:.3f}"),
)


def _cell(summary: dict, metric: str, fmt: str) -> str:
    """``gen / lm = ratio`` of one metric's medians."""
    g, lm = summary["mlx_gen"][metric]["median"], summary["mlx_lm"][metric]["median"]
    return f"{fmt.format(g)} / {fmt.format(lm)} = {summary['ratio'][metric]:.2f}x"


def table(rows: list[dict]) -> str:
    head = (
        "| model | scenario | prompt | prefill tok/s (gen / lm = ratio) | decode tok/s "
        "(gen / lm = ratio) | TTFT s (gen / lm) | peak GB (gen / lm) |"
    )
    lines = [head, "|" + "---|" * 7]
    for row in rows:
        s = row["summary"]
        cells = [_cell(s, m, fmt) for m, fmt in CELLS]
        lines.append(
            f"| {row['model']} | {row['scenario']} | {row['prompt_len']} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def ratio_table(rows: list[dict]) -> str:
    """Decode tokens/s per model: each mlx_gen scenario against mlx-lm plain (and its own)."""
    lines = [
        "| model | prompt | mlx-lm plain tok/s | mlx_gen scenario | mlx_gen tok/s "
        "| / mlx-lm plain | / mlx-lm same scenario |",
        "|---|---|---|---|---|---|---|",
    ]

    def spread(cell: dict) -> str:
        d = cell["decode_tps"]
        return f"{d['median']:.1f} ({d['min']:.1f}-{d['max']:.1f})"

    for row in rows:
        plain = next(
            (
                r["summary"]["mlx_lm"]
                for r in rows
                if (r["model"], r["prompt_len"], r["scenario"])
                == (row["model"], row["prompt_len"], "plain")
            ),
            None,
        )
        s = row["summary"]
        gen = s["mlx_gen"]["decode_tps"]["median"]
        vs_plain = f"{gen / plain['decode_tps']['median']:.2f}x" if plain else "-"
        lines.append(
            f"| {row['model']} | {row['prompt_len']} | {spread(plain) if plain else '-'} | "
            f"{row['scenario']} | {spread(s['mlx_gen'])} | {vs_plain} | "
            f"{s['ratio']['decode_tps']:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="stories260K,110M")
    parser.add_argument("--scenarios", default="plain,controls,sampling")
    parser.add_argument("--prompt-lens", default="128")
    parser.add_argument("--gen", type=int, default=64)
    parser.add_argument("--rounds", "--repeats", dest="rounds", type=int, default=3)
    parser.add_argument("--root", type=Path, default=HERE / ".models")
    parser.add_argument(
        "--stories", type=Path, default=HERE.parents[1] / "shared" / "models" / "stories260K"
    )
    parser.add_argument("--out", type=Path, default=HERE / "results" / "latest.json")
    args = parser.parse_args()
    env = environment()
    print(json.dumps(env), file=sys.stderr)
    models = {name: model_folder(name, args.root, args.stories) for name in args.models.split(",")}
    cells = [
        (name, int(p), scenario)
        for name in models
        for p in args.prompt_lens.split(",")
        for scenario in args.scenarios.split(",")
    ]
    runs: dict[tuple, dict[str, list[dict]]] = {c: {e: [] for e in ENGINES} for c in cells}
    for r in range(args.rounds):
        for cell in cells:
            name, prompt_len, scenario = cell
            sources = models[name]
            for engine in ENGINES if r % 2 == 0 else ENGINES[::-1]:
                source = sources[0] if engine == "mlx_gen" else sources[1]
                vocab = vocab_of(sources[1])
                one = measure(engine, source, prompt_len, args.gen, scenario, vocab)
                runs[cell][engine].append(one)
                print(
                    f"round {r} {name} {prompt_len} {scenario} {engine}: "
                    f"{one['decode_tps']:.1f} tok/s",
                    file=sys.stderr,
                    flush=True,
                )
    rows = [
        {
            "model": name,
            "scenario": scenario,
            "prompt_len": prompt_len,
            "runs": runs[(name, prompt_len, scenario)],
            "summary": summarize(runs[(name, prompt_len, scenario)]),
        }
        for name, prompt_len, scenario in cells
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    record = {"environment": env, "gen": args.gen, "rounds": args.rounds, "rows": rows}
    tmp.write_text(json.dumps(record, indent=1))
    tmp.rename(args.out)
    print(table(rows))
    print()
    print(ratio_table(rows))


if __name__ == "__main__":
    main()
