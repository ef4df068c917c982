"""Tensor-parallel decode: 1 rank against 2 ranks (ring backend on one host), speed and memory.

    python benchmarks/bench_distributed.py --out benchmarks/results/distributed-110M.json
    python benchmarks/bench_distributed.py --preset tiny --repeats 1 --gen 8   # smoke test

The random 110M Llama preset (``presets.py``) is written once. Each measurement is a
fresh run: 1 rank is ``python this --worker`` alone, 2 ranks the same under
``python -m mlx_gen.cli.launch -n 2 --backend ring``; the two are interleaved and the
pair repeated. Each rank reports its parameter bytes, MLX's active memory after
loading, the peak memory while loading and overall, and the decode tokens/s of one greedy call
(EOS ignored, ``--gen`` tokens). Both ranks on one host share its cores and talk over
loopback TCP, so the 2-rank speed here measures the cost of the collectives, not what
two Macs would do; the memory per rank is the point.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from presets import write_preset  # noqa: E402


def worker(folder: str, gen: int, out_dir: str) -> None:
    """One rank: load (sharded when launched as several), generate, write ``rank{r}.json``."""
    import mlx.core as mx

    import mlx_gen as mg
    from mlx_gen.loading.distributed import parameter_bytes

    mx.reset_peak_memory()
    model = mg.load(folder)
    mx.eval(model.model.parameters())  # whole: read now; sharded: already read by load
    loaded = {
        "parameter_bytes": parameter_bytes(model.model),
        "active_bytes": mx.get_active_memory(),
        "load_peak_bytes": mx.get_peak_memory(),
    }
    prompt = list(range(3, 19))
    settings = mg.GenerationSettings(max_tokens=gen, temperature=0, ignore_eos=True)
    mg.generate(model, prompt, settings=mg.GenerationSettings(max_tokens=4, ignore_eos=True))
    result = mg.generate(model, prompt, settings=settings)
    report = {
        **loaded,
        "decode_tps": result.stats.decode_tps,
        "peak_bytes": mx.get_peak_memory(),
        "tokens": result.token_ids,
    }
    Path(out_dir, f"rank{model.rank}.json").write_text(json.dumps(report))


def measure(ranks: int, folder: Path, gen: int) -> list[dict]:
    """One fresh run on ``ranks`` ranks; each rank's report."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, __file__, "--gen", str(gen), "--worker", str(folder), out]
        if ranks > 1:
            port = str(random.randrange(20000, 60000))
            launcher = [sys.executable, "-m", "mlx_gen.cli.launch", "-n", str(ranks)]
            command = [*launcher, "--backend", "ring", "-p", port, "--", *command]
        env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
        subprocess.run(command, check=True, env=env, stdin=subprocess.DEVNULL, timeout=1200)
        return [json.loads(Path(out, f"rank{r}.json").read_text()) for r in range(ranks)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="110M")
    parser.add_argument("--gen", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--worker", nargs=2, metavar=("FOLDER", "OUT_DIR"))
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], args.gen, args.worker[1])
        return
    folder = write_preset(args.preset, Path(tempfile.gettempdir()) / "mlx_gen_bench")
    runs: dict[int, list[list[dict]]] = {1: [], 2: []}
    for _ in range(args.repeats):
        for ranks in (1, 2):
            runs[ranks].append(measure(ranks, folder, args.gen))
    summary = {}
    for ranks, reports in runs.items():
        assert all(r["tokens"] == runs[1][0][0]["tokens"] for rep in reports for r in rep)
        summary[ranks] = {
            "decode_tps_median": statistics.median(rep[0]["decode_tps"] for rep in reports),
            "decode_tps_all": [round(rep[0]["decode_tps"], 2) for rep in reports],
            **{k: reports[0][0][k] for k in ("parameter_bytes", "active_bytes")},
            "load_peak_bytes_max": max(r["load_peak_bytes"] for rep in reports for r in rep),
            "peak_bytes_max": max(r["peak_bytes"] for rep in reports for r in rep),
        }
    text = json.dumps({"preset": args.preset, "gen": args.gen, "ranks": summary}, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
