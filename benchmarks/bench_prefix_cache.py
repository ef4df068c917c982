"""The prefix cache on growing conversations: mlx_gen's server against mlx_lm.server.

    python benchmarks/bench_prefix_cache.py --preset 15M --repeats 3 \
        --out benchmarks/results/prefix-cache-15M.json

Both servers run at once, as subprocesses on the same random-weight preset folder
(its max_position_embeddings of 4096 holds the ~3k-token chat). mlx_gen runs with its
prefix cache (``--prompt-cache-bytes``), mlx_lm.server with its prompt cache (on by
default). Two workloads, each request a greedy streaming /v1/completions call:

* chat: 8 turns; each turn's prompt is the previous prompt, the previous reply and a
  new user message of ``--turn-tokens`` words (~3k tokens at turn 8);
* agent: a ``--agent-system``-word task, then 10 steps; each appends the previous reply
  and a tool result of ``--tool-tokens`` words.

Built for a shared, noisy machine: every turn goes to both servers back to back (which
one goes first alternates by turn and repeat), so load hits both alike; then a fresh
prompt of exactly the turn's uncached tokens ("new alone") goes to both, and the
model's own forward pass of as many tokens on a cache of the cached length and alone
runs in-process (``prefix_floor.py``: what any engine must compute). The workload runs
``--repeats`` times with distinct seeded texts, so nothing is cached across repeats.
Per turn: medians and ranges over repeats of time to first token (TTFT), of the paired
ratio mlx_gen / mlx_lm, of TTFT / "new alone" and of the model's own ratio; cached
tokens (``usage.prompt_tokens_details.cached_tokens``); each server's peak resident set
(VmHWM), mlx_gen's cache bytes against its budget (/health), and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from transformers import AutoTokenizer

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_generate import environment  # noqa: E402
from bench_server import free_port  # noqa: E402
from prefix_floor import Floor  # noqa: E402
from presets import write_preset  # noqa: E402

ENGINES = ("mlx_gen", "mlx_lm")


def start(engine: str, model: Path, budget: str) -> tuple[subprocess.Popen, str]:
    """Start one server; return it once it answers, with its base URL."""
    port = free_port()
    common = ["--model", str(model), "--port", str(port)]
    if engine == "mlx_gen":
        extra = ["--model-name", "bench", "--prompt-cache-bytes", budget]
        cmd = [sys.executable, "-m", "mlx_gen.server", *common, *extra]
    else:
        cmd = [sys.executable, "-m", "mlx_lm", "server", *common, "--log-level", "WARNING"]
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


def stop(proc: subprocess.Popen) -> None:
    """Stop a server (SIGINT, then kill after 30 s)."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def request(client: httpx.Client, server: tuple[str, str], prompt: str, gen: int) -> dict:
    """One greedy streaming completion: TTFT, the reply text, the usage if reported."""
    base, model = server
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": gen,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start, first, text, usage = time.perf_counter(), None, [], None
    with client.stream("POST", base + "/v1/completions", json=body) as r:
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            usage = event.get("usage") or usage
            for choice in event.get("choices") or []:
                if choice.get("text") or choice.get("finish_reason"):  # EOS first: no text
                    first = first or time.perf_counter()
                    text.append(choice.get("text") or "")
    if first is None:
        raise RuntimeError(f"no token came back (prompt of {len(prompt.split())} words)")
    details = (usage or {}).get("prompt_tokens_details") or {}
    return {
        "ttft": first - start,
        "text": "".join(text),
        "prompt_tokens": (usage or {}).get("prompt_tokens"),
        "cached": details.get("cached_tokens"),
    }


def words(rng: random.Random, n: int) -> str:
    """``n`` random words of the preset's vocabulary (~1.75 tokens each)."""
    return " ".join(f"t{rng.randrange(3, 30000)}" for _ in range(n))


def fresh(tok: Any, rng: random.Random, n: int) -> str:
    """A new text of exactly ``n`` tokens as the servers count them (cut at the n-th)."""
    text = words(rng, n)  # each word is one or more tokens
    offsets = tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return text[: offsets[n - 1][1]]


def workload(kind: str, args: argparse.Namespace, repeat: int) -> tuple[str, list[str]]:
    """The opening text and each turn's new text (the same for both engines)."""
    rng = random.Random(f"{kind}-{repeat}")
    if kind == "chat":
        return words(rng, 8), [words(rng, args.turn_tokens) for _ in range(8)]
    return words(rng, args.agent_system), [words(rng, args.tool_tokens) for _ in range(10)]


def converse(servers: dict, kind: str, repeat: int, tok: Any, floor: Floor | None, args) -> dict:
    """One run of the workload on both servers, turn by turn, back to back."""
    opening, turns = workload(kind, args, repeat)
    if floor is not None:
        floor.restart()
    prompts, rows = dict.fromkeys(ENGINES, opening), {e: [] for e in ENGINES}
    rng = random.Random(f"alone-{kind}-{repeat}")
    with httpx.Client(timeout=600) as client:
        for n, new in enumerate(turns):
            order = ENGINES if (n + repeat) % 2 == 0 else ENGINES[::-1]
            turn = {}
            for e in order:
                prompts[e] = f"{prompts[e]} {new}"
                turn[e] = request(client, servers[e], prompts[e], args.gen)
            g = turn["mlx_gen"]
            count = g["prompt_tokens"] - (g["cached"] or 0)  # the tokens this turn prefilled
            alone = fresh(tok, rng, count)
            # The model's own forward passes, right after, under the same load.
            turn["mlx_gen"]["floor"] = floor.measure(g["cached"] or 0, count) if floor else None
            turn["mlx_gen"]["load"] = os.getloadavg()[0]
            for e in order:
                row = turn[e]
                solo = request(client, servers[e], alone, 1)
                row["new_only_ttft"], row["alone_tokens"] = solo["ttft"], solo["prompt_tokens"]
                row.update(turn=n + 1, first=e == order[0], new_tokens=count)
                prompts[e] = f"{prompts[e]} {row.pop('text').strip()}"
                rows[e].append(row)
            print(
                f"r{repeat} {kind} turn {n + 1:2d}: {g['prompt_tokens']:5d} tokens, TTFT "
                + ", ".join(
                    f"{e} {turn[e]['ttft']:.3f} s (alone {turn[e]['new_only_ttft']:.3f})"
                    for e in ENGINES
                ),
                flush=True,
            )
    return rows


def peak_rss(pid: int) -> int:
    """Peak resident set of process ``pid`` in bytes (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def spread(values: list[float], fmt: str = ".3f") -> str:
    """``median (min-max)``."""
    return (
        f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"
        if len(values) > 1
        else f"{values[0]:{fmt}}"
    )


def summarize(runs: list[dict]) -> list[dict]:
    """Per turn, over repeats: TTFTs, paired ratios, "new alone" ratios, the floor."""
    out = []
    for t in range(len(runs[0]["mlx_gen"])):
        g = [r["mlx_gen"][t] for r in runs]
        m = [r["mlx_lm"][t] for r in runs]
        out.append(
            {
                "turn": t + 1,
                "prompt_tokens": [x["prompt_tokens"] for x in g],
                "new_tokens": [x["new_tokens"] for x in g],
                "cached": [[x["cached"] for x in g], [x["cached"] for x in m]],
                "ttft": [[x["ttft"] for x in g], [x["ttft"] for x in m]],
                "alone": [[x["new_only_ttft"] for x in g], [x["new_only_ttft"] for x in m]],
                "gen_over_lm": [a["ttft"] / b["ttft"] for a, b in zip(g, m, strict=True)],
                "over_alone": [[x["ttft"] / x["new_only_ttft"] for x in s] for s in (g, m)],
                "floor": [x["floor"] for x in g] if g[0]["floor"] else None,
            }
        )
    return out


def table(summary: list[dict]) -> str:
    """One workload's per-turn markdown table (as BENCHMARKS.md shows it)."""
    lines = [
        "| turn | prompt / new tokens | mlx_gen TTFT (s) | mlx_lm TTFT (s) | mlx_gen / mlx_lm "
        "| new alone mlx_gen / mlx_lm (s) | TTFT / new alone: mlx_gen, mlx_lm | the model's "
        "own ratio | mlx_gen TTFT / model on context | cached mlx_gen / mlx_lm |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    med = statistics.median
    for s in summary:
        floor = s["floor"] or [{"context": float("nan"), "alone": float("nan")}]
        model_ratio = [f["context"] / f["alone"] for f in floor]
        over_floor = [t / f["context"] for t, f in zip(s["ttft"][0], floor, strict=False)]
        lines.append(
            f"| {s['turn']} | {int(med(s['prompt_tokens']))} / {int(med(s['new_tokens']))} | "
            f"{spread(s['ttft'][0])} | {spread(s['ttft'][1])} | "
            f"{spread(s['gen_over_lm'], '.2f')} | "
            + " / ".join(f"{med(a):.3f}" for a in s["alone"])
            + f" | {spread(s['over_alone'][0], '.2f')}, {med(s['over_alone'][1]):.2f} | "
            f"{spread(model_ratio, '.2f')} | {spread(over_floor, '.2f')} | "
            + " / ".join(str(int(med(c))) for c in s["cached"])
            + " |"
        )
    return "\n".join(lines)


def main() -> None:
    """Run both workloads on both servers; print the tables; write ``--out``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="15M")
    p.add_argument("--root", type=Path, default=Path("/tmp/mlx_gen_bench"))
    p.add_argument("--gen", type=int, default=16, help="reply tokens per turn")
    # Words, not tokens: the preset's tokenizer gives ~1.75 tokens a word.
    p.add_argument("--turn-tokens", type=int, default=200)
    p.add_argument("--agent-system", type=int, default=300)
    p.add_argument("--tool-tokens", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workloads", default="chat,agent", help="comma-separated: chat, agent")
    p.add_argument("--floor-tries", type=int, default=1, help="0: no model floor")
    p.add_argument("--budget", default="256M", help="mlx_gen's --prompt-cache-bytes")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    model = write_preset(args.preset, args.root)
    tok = AutoTokenizer.from_pretrained(str(model))  # what both servers load
    options = {k: str(v) for k, v in vars(args).items()}
    results: dict = {"environment": environment(), "args": options}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still stop the servers
    procs = {e: start(e, model, args.budget) for e in ENGINES}
    servers = {e: (procs[e][1], "bench" if e == "mlx_gen" else str(model)) for e in ENGINES}
    floor = Floor(model, args.floor_tries) if args.floor_tries else None
    began = time.monotonic()
    try:
        with httpx.Client(timeout=600) as client:  # warm-up: load weights, first traces
            for e in ENGINES:
                request(client, servers[e], words(random.Random(0), 300), 2)
        runs = {
            k: [converse(servers, k, r, tok, floor, args) for r in range(args.repeats)]
            for k in args.workloads.split(",")
        }
        results["cache"] = httpx.get(servers["mlx_gen"][0] + "/health").json()["prompt_cache"]
        results["peak_rss"] = {e: peak_rss(procs[e][0].pid) for e in ENGINES}
    finally:
        for proc, _ in procs.values():
            stop(proc)
    loads = [row["load"] for v in runs.values() for r in v for row in r["mlx_gen"]]
    results |= {"seconds": time.monotonic() - began, "runs": runs}
    results["summary"] = {k: summarize(v) for k, v in runs.items()}
    results["load_average"] = dict(min=min(loads), median=statistics.median(loads), max=max(loads))
    for kind in runs:
        print(f"\n{kind}\n" + table(results["summary"][kind]))
    cache, rss, mib = results["cache"], results["peak_rss"], 2**20
    print(
        f"\nmlx_gen cache {cache['bytes'] / mib:.1f} MiB of {cache['max_bytes'] / mib:.0f} MiB;"
        f" peak RSS mlx_gen {rss['mlx_gen'] / mib:.0f} MiB, mlx_lm {rss['mlx_lm'] / mib:.0f} MiB;"
        f" load average {results['load_average']}; {results['seconds']:.0f} s"
    )
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
