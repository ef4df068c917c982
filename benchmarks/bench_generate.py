"""mlx_gen against mlx-lm on the same weights, side by side, in one run.

    python benchmarks/bench_generate.py --models 15M,110M --out benchmarks/results/run.json

Every measurement runs in a fresh process (benchmarks/worker.py); engines alternate
order on each repeat; the table reports the median (and min) over repeats and the
mlx_gen/mlx-lm ratio (above 1 means mlx_gen is faster; for time to first token and
memory, below 1 is better). Generation is greedy (or seeded sampling) with EOS
ignored so both engines produce the same number of tokens.
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
        "device": str(mx.default_device()),
        "mlx": mx.__version__,
        "mlx_lm": mlx_lm.__version__,
        "python": platform.python_version(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "LD_PRELOAD": os.environ.get("LD_PRELOAD", ""),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", ""),
    }


def model_folder(name: str, root: Path) -> tuple[str, str]:
    """(mlx_gen source, mlx-lm source) for a preset or the embedded SmolLM2 GGUF."""
    if name in PRESETS:
        folder = str(write_preset(name, root))
        return folder, folder
    if name == "smollm2":  # mlx-lm cannot read GGUF: it gets the same weights converted.
        from mlx_gen.convert.main import convert

        folder = root / "smollm2-q4"
        if not folder.exists():
            convert(None, folder)
        return "default", str(folder)
    raise SystemExit(f"error: unknown model {name!r}; valid: {', '.join(PRESETS)}, smollm2")


def measure(engine: str, model: str, prompt_len: int, gen: int, scenario: str) -> dict:
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
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"worker failed: {' '.join(cmd)}\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_cell(
    sources: tuple[str, str], prompt_len: int, gen: int, scenario: str, repeats: int
) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {e: [] for e in ENGINES}
    for r in range(repeats):
        order = ENGINES if r % 2 == 0 else ENGINES[::-1]
        for engine in order:
            source = sources[0] if engine == "mlx_gen" else sources[1]
            runs[engine].append(measure(engine, source, prompt_len, gen, scenario))
    return runs


def summarize(runs: dict[str, list[dict]]) -> dict:
    out = {}
    for engine, rs in runs.items():
        out[engine] = {
            m: {"median": statistics.median(r[m] for r in rs), "min": min(r[m] for r in rs)}
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="15M,110M")
    parser.add_argument("--scenarios", default="plain,controls,sampling")
    parser.add_argument("--prompt-lens", default="128,1024")
    parser.add_argument("--gen", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--root", type=Path, default=HERE / ".models")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "latest.json")
    args = parser.parse_args()
    env = environment()
    print(json.dumps(env), file=sys.stderr)
    rows = []
    for name in args.models.split(","):
        sources = model_folder(name, args.root)
        for prompt_len in (int(p) for p in args.prompt_lens.split(",")):
            for scenario in args.scenarios.split(","):
                runs = run_cell(sources, prompt_len, args.gen, scenario, args.repeats)
                rows.append(
                    {
                        "model": name,
                        "scenario": scenario,
                        "prompt_len": prompt_len,
                        "runs": runs,
                        "summary": summarize(runs),
                    }
                )
                print(table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"environment": env, "rows": rows}, indent=1))
    tmp.rename(args.out)
    print(table(rows))


if __name__ == "__main__":
    main()
