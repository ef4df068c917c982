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

    python benchmarks/bench_distributed.py --server \
        --out benchmarks/results/distributed-server-110M.json

``--server`` measures the server instead: ``python -m mlx_gen.server`` alone, then under
``mlx-gen-launch -n 2 --backend ring`` (fresh each time, interleaved, repeated), with 1
and then 8 concurrent streaming clients (greedy, EOS ignored, ``--gen`` tokens each):
aggregate tokens/s (all tokens over the wall time of the wave), and each rank's resident
memory (``VmRSS``, the process with its libraries) and peak (``VmHWM``) after the waves.

    python benchmarks/bench_distributed.py --server --speculative --model DIR \
        --out benchmarks/results/distributed-server-lookup.json

``--speculative`` compares prompt lookup on and off under 2 ranks instead: a fresh
``mlx-gen-launch -n 2`` server with ``--prompt-lookup 4`` (under ranks: drafting whenever
lookup finds drafts) and one without, interleaved, each answering one greedy stream of a
rewrite prompt (the story, then the start of its rewrite); tokens/s and their ratio, the
drafted and accepted tokens (``/metrics``), and whether both gave the same text.
``--model DIR`` serves that folder instead of a random preset (which copies nothing).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
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


def _server_pids(port: int) -> list[int]:
    """The server processes (every rank, not the launcher) whose command line holds ``port``."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
        except OSError:
            continue
        launcher = b"mlx_gen.cli.launch" in args  # it carries the command line too
        if b"mlx_gen.server" in args and str(port).encode() in args and not launcher:
            pids.append(int(entry.name))
    return sorted(pids)


def _default_sigint() -> None:
    """In the launcher's process: SIGINT as by default (a shell's background job starts
    with it ignored, and then the launcher would never see the bench's Ctrl-C)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _memory(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` of ``pid`` in bytes."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return {k: int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM")}


STORY = (
    "Once upon a time, there was a little girl named Lily. She liked to play in the park. "
    "One day, she saw a big, red ball. She wanted to play with it, but it was too high."
)
KINDS = ("draft", "accepted")  # the /metrics counters mlx_gen_spec_{kind}_tokens_total
REWRITE = f"Rewrite the story.\n{STORY}\nRewritten:\nOnce upon a time, there was a"


def _wave(url: str, clients: int, gen: int, prompt: str | None = None) -> float:
    """``clients`` concurrent streaming requests (``prompt``, else ``Story i:``); aggregate
    generated tokens/s."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    def one(i: int) -> int:
        text = prompt or f"Story {i}:"
        body = {"model": "bench", "prompt": text, "max_tokens": gen, "temperature": 0}
        body |= {"ignore_eos": True, "stream": True}
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=1200) as r:
            r.raise_for_status()
            return sum(1 for line in r.iter_lines() if line.startswith("data: {"))

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        tokens = sum(pool.map(one, range(clients)))
    return tokens / (time.perf_counter() - start)


def measure_server(ranks: int, folder: Path, gen: int, extra: tuple[str, ...] = ()) -> dict:
    """One fresh server on ``ranks`` ranks (``extra``: more server flags): tokens/s at 1
    and 8 streams, memory per rank."""
    with _serving(ranks, folder, extra) as (url, port):
        _wave(url, 1, 4)  # warm-up
        tps = {n: _wave(url, n, gen) for n in (1, 8)}
        return {"tps": tps, "memory": [_memory(pid) for pid in _server_pids(port)]}


def measure_lookup(folder: Path, gen: int, lookup: bool) -> dict:
    """A fresh 2-rank server, prompt lookup on or off: one stream of :data:`REWRITE`."""
    import httpx

    with _serving(2, folder, ("--prompt-lookup", "4") if lookup else ()) as (url, _):
        _wave(url, 1, 4, REWRITE)  # warm-up
        tps = _wave(url, 1, gen, REWRITE)
        lines = httpx.get(f"{url}/metrics").text.splitlines()  # warm-up + the stream
        samples = dict(m.split() for m in lines if m.startswith("mlx_gen_spec_"))
        counts = {k: float(samples.get(f"mlx_gen_spec_{k}_tokens_total", 0)) for k in KINDS}
        body = {"model": "bench", "prompt": REWRITE, "max_tokens": gen, "temperature": 0}
        text = httpx.post(f"{url}/v1/completions", json=body, timeout=1200).json()
        return {"tps": tps, "text": text["choices"][0]["text"], **counts}


def lookup_main(args: argparse.Namespace, folder: Path) -> dict:
    """Prompt lookup on vs off under 2 ranks, interleaved, ``args.repeats`` times."""
    runs: dict[bool, list[dict]] = {True: [], False: []}
    for _ in range(args.repeats):
        for lookup in (False, True):
            runs[lookup].append(measure_lookup(folder, args.gen, lookup))
    on, off = (statistics.median(r["tps"] for r in runs[k]) for k in (True, False))
    texts = {r["text"] for rs in runs.values() for r in rs}
    return {"model": str(folder), "gen": args.gen, "ranks": 2, "prompt": REWRITE,
            "tps_off_median": off, "tps_lookup_median": on, "ratio": on / off,
            "same_text": len(texts) == 1, "runs": {str(k): v for k, v in runs.items()}}  # fmt: skip


@contextlib.contextmanager
def _serving(ranks: int, folder: Path, extra: tuple[str, ...]):
    """A fresh server on ``ranks`` ranks: ``(url, port)``; every rank stopped afterwards."""
    import re
    import time

    port = random.randrange(20000, 60000)
    command = [sys.executable, "-m", "mlx_gen.server", "--model", str(folder)]
    command += ["--model-name", "bench", "--port", str(port), "--max-batch-size", "8", *extra]
    if ranks > 1:
        launcher = [sys.executable, "-m", "mlx_gen.cli.launch", "-n", str(ranks)]
        ring = str(random.randrange(20000, 60000))
        command = [*launcher, "--backend", "ring", "-p", ring, "--", *command]
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    proc = subprocess.Popen(  # Ctrl-C must reach it even when this runs in the background
        command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
        preexec_fn=_default_sigint,
    )  # fmt: skip
    try:
        for line in proc.stdout:
            ready = re.search(r"ready on (http://\S+)/v1", line)
            if ready:
                break
        else:
            raise RuntimeError("the server did not start")
        yield ready.group(1), port
    finally:
        proc.send_signal(2)  # Ctrl-C: the launcher stops every rank
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        time.sleep(0.5)
        left = _server_pids(port)  # Ctrl-C stops every rank: none, unless it failed
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        if left:
            print(f"warning: ranks {left} were left running; killed", file=sys.stderr)


def server_main(args: argparse.Namespace, folder: Path) -> dict:
    """1 vs ``2`` ranks of the server, interleaved, ``args.repeats`` times; the summary."""
    runs: dict[int, list[dict]] = {1: [], 2: []}
    for _ in range(args.repeats):
        for ranks in (1, 2):
            runs[ranks].append(measure_server(ranks, folder, args.gen))
    summary = {}
    for ranks, reports in runs.items():
        summary[ranks] = {
            f"tps_{n}_streams_median": statistics.median(r["tps"][n] for r in reports)
            for n in (1, 8)
        }
        summary[ranks]["rss_bytes_per_rank_max"] = max(
            m["VmRSS"] for r in reports for m in r["memory"]
        )
        summary[ranks]["hwm_bytes_per_rank_max"] = max(
            m["VmHWM"] for r in reports for m in r["memory"]
        )
        summary[ranks]["processes"] = len(reports[0]["memory"])
    return {"preset": args.preset, "gen": args.gen, "server": True, "ranks": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="110M")
    parser.add_argument("--gen", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--worker", nargs=2, metavar=("FOLDER", "OUT_DIR"))
    parser.add_argument("--server", action="store_true", help="measure the server instead")
    parser.add_argument("--speculative", action="store_true",
                        help="with --server: prompt lookup on vs off under 2 ranks")  # fmt: skip
    parser.add_argument("--model", type=Path, help="serve this folder instead of a preset")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], args.gen, args.worker[1])
        return
    folder = args.model or write_preset(args.preset, Path(tempfile.gettempdir()) / "mlx_gen_bench")
    if args.server:
        run = lookup_main if args.speculative else server_main
        text = json.dumps(run(args, folder), indent=2)
        print(text)
        if args.out:
            args.out.write_text(text + "\n")
        return
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
