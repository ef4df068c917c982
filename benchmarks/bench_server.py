"""mlx_gen's server against mlx_lm.server on the same weights: concurrent streams.

    python benchmarks/bench_server.py --preset 15M --concurrency 1,4,16 --gen 32 \
        --repeats 2 --out benchmarks/results/server.json

Each repeat starts both servers in turn (order alternating), as subprocesses on
127.0.0.1, on the same random-weight preset folder; for each concurrency level C, C
clients start one streaming greedy /v1/completions request each at the same moment
(distinct prompts of --prompt-len tokens, --gen tokens). Reported per level: aggregate
tokens/s (streamed tokens / wall time from the first request to the last token) and the
time to first token (p50/p95 over every request of every repeat), with the ratio
mlx_gen / mlx_lm (above 1 is better for tokens/s, below 1 for time to first token).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_generate import environment  # noqa: E402
from presets import write_preset  # noqa: E402

ENGINES = ("mlx_gen", "mlx_lm")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(engine: str, model: Path, batch: int) -> tuple[subprocess.Popen, str]:
    """Start one server; return it once it answers, with its base URL."""
    port = free_port()
    if engine == "mlx_gen":
        cmd = [
            sys.executable,
            "-m",
            "mlx_gen.server",
            "--model",
            str(model),
            "--model-name",
            "bench",
            "--port",
            str(port),
            "--max-batch-size",
            str(batch),
        ]
    else:
        cmd = [
            sys.executable,
            "-m",
            "mlx_lm",
            "server",
            "--model",
            str(model),
            "--port",
            str(port),
            "--decode-concurrency",
            str(batch),
            "--log-level",
            "WARNING",
        ]
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/v1/models", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{engine} server did not start")


def stream_one(
    client: httpx.Client, base: str, model: str, prompt: str, gen: int, out: dict, barrier
) -> None:
    """One streaming request: record its start, first-token and end times and token count."""
    body = {"model": model, "prompt": prompt, "max_tokens": gen, "temperature": 0.0, "stream": True}
    barrier.wait()
    start, first, tokens = time.perf_counter(), None, 0
    with client.stream("POST", base + "/v1/completions", json=body) as r:
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choices = json.loads(line[6:]).get("choices") or []
            if choices and choices[0].get("text"):
                tokens += 1
                first = first or time.perf_counter()
    out.update(start=start, first=first, end=time.perf_counter(), tokens=tokens)


def load(base: str, model: str, concurrency: int, gen: int, prompt_len: int, seed: int) -> dict:
    """C simultaneous streams; aggregate tokens/s and each request's time to first token."""
    prompts = [
        " ".join(f"t{3 + (seed * 7919 + c * 104729 + i * 31) % 30000}" for i in range(prompt_len))
        for c in range(concurrency)
    ]
    outs = [{} for _ in prompts]
    barrier = threading.Barrier(concurrency)
    # One client for every stream, made before the clock starts: a client per request
    # (TLS context, pool) costs ~0.1 s of client CPU each, which polluted TTFT.
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(timeout=600, limits=limits) as client:
        threads = [
            threading.Thread(target=stream_one, args=(client, base, model, p, gen, o, barrier))
            for p, o in zip(prompts, outs, strict=True)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    start, end = min(o["start"] for o in outs), max(o["end"] for o in outs)
    tokens = sum(o["tokens"] for o in outs)
    return {
        "tokens": tokens,
        "seconds": end - start,
        "tps": tokens / (end - start),
        "ttft": [o["first"] - o["start"] for o in outs if o["first"]],
    }


def run(args: argparse.Namespace, model: Path, levels: list[int]) -> list[dict]:
    rows = []
    for repeat in range(args.repeats):
        order = ENGINES if repeat % 2 == 0 else ENGINES[::-1]
        for engine in order:
            proc, base = start(engine, model, max(levels))
            name = "bench" if engine == "mlx_gen" else str(model)
            try:
                load(base, name, 1, 4, 8, seed=999)  # warm-up
                for c in levels:
                    result = load(base, name, c, args.gen, args.prompt_len, seed=repeat)
                    rows.append({"engine": engine, "repeat": repeat, "concurrency": c, **result})
                    print(
                        f"{engine:8s} r{repeat} C={c:2d}: {result['tps']:7.1f} tok/s, "
                        f"{result['tokens']} tokens",
                        flush=True,
                    )
            finally:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    return rows


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def table(rows: list[dict], levels: list[int]) -> str:
    lines = [
        "| streams | mlx_gen tok/s | mlx_lm tok/s | ratio | TTFT p50 mlx_gen / mlx_lm (s) "
        "| TTFT p95 mlx_gen / mlx_lm (s) |",
        "|---|---|---|---|---|---|",
    ]
    for c in levels:
        tps, p50, p95 = {}, {}, {}
        for engine in ENGINES:
            mine = [r for r in rows if r["engine"] == engine and r["concurrency"] == c]
            tps[engine] = statistics.median(r["tps"] for r in mine)
            ttft = [t for r in mine for t in r["ttft"]]
            p50[engine], p95[engine] = pct(ttft, 0.5), pct(ttft, 0.95)
        lines.append(
            f"| {c} | {tps['mlx_gen']:.1f} | {tps['mlx_lm']:.1f} | "
            f"{tps['mlx_gen'] / tps['mlx_lm']:.2f}x | {p50['mlx_gen']:.3f} / {p50['mlx_lm']:.3f} "
            f"| {p95['mlx_gen']:.3f} / {p95['mlx_lm']:.3f} |"
        )
    for engine in ENGINES:
        by = {
            c: statistics.median(
                r["tps"] for r in rows if r["engine"] == engine and r["concurrency"] == c
            )
            for c in levels
        }
        lines.append(
            f"\n{engine}: {max(levels)} streams / 1 stream = "
            f"{by[max(levels)] / by[min(levels)]:.2f}x"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="15M", help="random-weight preset (presets.py)")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--gen", type=int, default=32)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    model = write_preset(args.preset, HERE / ".models")
    rows = run(args, model, levels)
    report = table(rows, levels)
    print(report)
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "environment": environment(),
                    "args": vars(args) | {"out": str(args.out)},
                    "rows": rows,
                    "table": report,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
