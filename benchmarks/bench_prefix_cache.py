"""The prefix cache on growing conversations: mlx_gen's server against mlx_lm.server.

    python benchmarks/bench_prefix_cache.py --preset 15M --out benchmarks/results/prefix-cache.json

Both servers run in turn as subprocesses on the same random-weight preset folder (a
word-level vocabulary: one word, one token, so prompt lengths are exact; its
max_position_embeddings of 4096 holds the ~3k-token chat). mlx_gen runs with its
default prefix cache on (``--prompt-cache-bytes``), mlx_lm.server with its prompt cache
(on by default). Two workloads, each request a greedy streaming /v1/completions call:

* chat: 8 turns; each turn's prompt is the previous prompt, the previous reply and a
  new user message of ``--turn-tokens`` words (~3k tokens at turn 8);
* agent: a ``--agent-system``-word task, then 10 steps; each appends the previous reply
  and a tool result of ``--tool-tokens`` words.

Reported per turn: time to first token (TTFT), cached prompt tokens (from
``usage.prompt_tokens_details.cached_tokens`` when the server reports it) and, for
mlx_gen, the TTFT of a fresh prompt made of only the turn's new tokens (the target:
turn-N TTFT <= 2x that). Peak memory: each server's peak resident set (VmHWM), and
mlx_gen's cache bytes against its budget (/health).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_generate import environment  # noqa: E402
from bench_server import free_port  # noqa: E402
from presets import write_preset  # noqa: E402


def start(engine: str, model: Path, budget: str) -> tuple[subprocess.Popen, str]:
    """Start one server; return it once it answers, with its base URL."""
    port = free_port()
    if engine == "mlx_gen":
        cmd = [sys.executable, "-m", "mlx_gen.server", "--model", str(model), "--model-name",
               "bench", "--port", str(port), "--prompt-cache-bytes", budget]
    else:
        cmd = [sys.executable, "-m", "mlx_lm", "server", "--model", str(model), "--port",
               str(port), "--log-level", "WARNING"]
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


def request(client: httpx.Client, base: str, model: str, prompt: str, gen: int) -> dict:
    """One greedy streaming completion: TTFT, the reply text, the usage if reported."""
    body = {"model": model, "prompt": prompt, "max_tokens": gen, "temperature": 0.0,
            "stream": True, "stream_options": {"include_usage": True}}
    start, first, text, usage = time.perf_counter(), None, [], None
    with client.stream("POST", base + "/v1/completions", json=body) as r:
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            usage = event.get("usage") or usage
            for choice in event.get("choices") or []:
                if choice.get("text"):
                    first = first or time.perf_counter()
                    text.append(choice["text"])
    if first is None:
        raise RuntimeError(f"no token came back (prompt of {len(prompt.split())} words)")
    details = (usage or {}).get("prompt_tokens_details") or {}
    return {"ttft": first - start, "text": "".join(text), "prompt_tokens":
            (usage or {}).get("prompt_tokens"), "cached": details.get("cached_tokens")}


def words(rng: random.Random, n: int) -> str:
    return " ".join(f"t{rng.randrange(3, 30000)}" for _ in range(n))


def workload(kind: str, args: argparse.Namespace) -> tuple[str, list[str]]:
    """The opening text and each turn's new text (the same for both engines)."""
    rng = random.Random(7 if kind == "chat" else 11)
    if kind == "chat":
        return words(rng, 8), [words(rng, args.turn_tokens) for _ in range(8)]
    return words(rng, args.agent_system), [words(rng, args.tool_tokens) for _ in range(10)]


def converse(engine: str, base: str, model: str, kind: str, args) -> list[dict]:
    opening, turns = workload(kind, args)
    prompt, rows, rng = opening, [], random.Random(99)
    with httpx.Client(timeout=600) as client:
        request(client, base, model, words(rng, 8), 2)  # warm-up
        for n, new in enumerate(turns):
            prompt = f"{prompt} {new}"
            row = request(client, base, model, prompt, args.gen)
            if engine == "mlx_gen":  # the same number of new tokens, on their own
                fresh = words(rng, len(new.split()) + args.gen)
                row["new_only_ttft"] = request(client, base, model, fresh, 1)["ttft"]
            row.update(turn=n + 1, words=len(prompt.split()))
            rows.append({k: v for k, v in row.items() if k != "text"})
            prompt = f"{prompt} {row['text'].strip()}"
            print(f"{engine:8s} {kind} turn {n + 1:2d}: {row['words']:5d} words, "
                  f"TTFT {row['ttft']:.3f} s, cached {row['cached']}", flush=True)
    return rows


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def table(results: dict, kind: str) -> str:
    gen, lm = results["mlx_gen"][kind], results["mlx_lm"][kind]
    lines = ["| turn | prompt tokens | mlx_gen TTFT (s) | new tokens alone (s) | ratio | "
             "mlx_lm TTFT (s) | cached mlx_gen / mlx_lm |", "|---|---|---|---|---|---|---|"]
    for g, m in zip(gen, lm, strict=True):
        lines.append(f"| {g['turn']} | {g['prompt_tokens']} | {g['ttft']:.3f} | "
                     f"{g['new_only_ttft']:.3f} | {g['ttft'] / g['new_only_ttft']:.2f}x | "
                     f"{m['ttft']:.3f} | {g['cached']} / {m['cached']} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="15M")
    p.add_argument("--root", type=Path, default=Path("/tmp/mlx_gen_bench"))
    p.add_argument("--gen", type=int, default=16, help="reply tokens per turn")
    # Words, not tokens: the preset's tokenizer gives ~1.75 tokens a word (unknown words).
    p.add_argument("--turn-tokens", type=int, default=200)
    p.add_argument("--agent-system", type=int, default=300)
    p.add_argument("--tool-tokens", type=int, default=100)
    p.add_argument("--budget", default="256M", help="mlx_gen's --prompt-cache-bytes")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    model = write_preset(args.preset, args.root)
    options = {k: str(v) for k, v in vars(args).items()}
    results: dict = {"environment": environment(), "args": options}
    for engine in ("mlx_gen", "mlx_lm"):
        proc, base = start(engine, model, args.budget)
        name = "bench" if engine == "mlx_gen" else str(model)
        try:
            results[engine] = {k: converse(engine, base, name, k, args) for k in ("chat", "agent")}
            if engine == "mlx_gen":
                results[engine]["cache"] = httpx.get(base + "/health").json()["prompt_cache"]
            results[engine]["peak_rss"] = peak_rss(proc.pid)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    for kind in ("chat", "agent"):
        print(f"\n{kind}\n" + table(results, kind))
    cache = results["mlx_gen"]["cache"]
    mib = 2**20
    print(f"\nmlx_gen cache {cache['bytes'] / mib:.1f} MiB of {cache['max_bytes'] / mib:.0f} MiB;"
          f" peak RSS mlx_gen {results['mlx_gen']['peak_rss'] / 2**20:.0f} MiB, "
          f"mlx_lm {results['mlx_lm']['peak_rss'] / 2**20:.0f} MiB")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
