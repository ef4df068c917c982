"""Speculation in the server: 1 and 4 concurrent streams, speculation on vs off, one run.

    python benchmarks/bench_server_speculative.py --out benchmarks/results/server-speculative.json

Two parts:

* ``batch forward``: milliseconds of one forward pass of ``B`` rows x ``T`` new tokens
  after 100 cached tokens (mlx-lm's ``BatchKVCache``), ``B`` in 1, 4 and ``T`` in 1, 5.
  Verifying 4 drafts per row costs ``(B, 5) / (B, 1)`` plain steps: this is what decides
  whether rows of a running batch could speculate (mlx_gen drafts only while a request
  runs alone: :mod:`mlx_gen.batch.speculate`).
* ``server``: mlx_gen's server in this process (uvicorn on 127.0.0.1, no prefix cache),
  greedy chat requests "rewrite this paragraph with one change" (prompt lookup's best
  case) and "write a story" (its worst), ``--gen`` tokens each, every control on as in
  ``bench_speculative.py``; ``S`` streams at once (1 and 4), each request sending
  ``speculative: {"prompt_lookup": 10}`` (on, the measured cost model deciding) or
  ``false`` (off). On and off alternate per repeat; outputs are checked identical.
  Reported: aggregate completion tokens/s over the wave, the ratio on/off, drafts
  accepted (``/metrics``).

Models: ``smollm2`` (the embedded Q4_1 GGUF) and ``smollm2-f32`` (the same weights
dequantized to float32; preload OpenBLAS for the BLAS-bound case, see BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import mlx.core as mx
import uvicorn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_generate import environment  # noqa: E402
from bench_server import free_port  # noqa: E402
from bench_speculative import REWRITE, STORY, controls  # noqa: E402
from mlx_lm.utils import dequantize_model  # noqa: E402

import mlx_gen as mg  # noqa: E402
from mlx_gen.batch.prefill import make_batch_cache  # noqa: E402
from mlx_gen.server.app import create_app  # noqa: E402


def batch_forward(name: str, model: mg.LoadedModel, repeats: int = 5) -> dict:
    """Milliseconds of one forward pass of B rows x T tokens after 100 cached (min)."""
    row = {"case": f"batch forward {name}"}
    for b in (1, 4):
        for t in (1, 5):
            times = []
            for _ in range(repeats):
                cache = make_batch_cache(model.model, b)
                model.model(mx.array([list(range(10, 110))] * b), cache=cache)
                mx.eval([c.state for c in cache])
                start = time.perf_counter()
                mx.eval(model.model(mx.array([list(range(200, 200 + t))] * b), cache=cache))
                times.append(time.perf_counter() - start)
            row[f"B{b}_T{t}_ms"] = 1000 * min(times)
        row[f"B{b}_verify4_in_steps"] = row[f"B{b}_T5_ms"] / row[f"B{b}_T1_ms"]
    print(f"{row['case']}: " + "  ".join(f"{k} {v:.2f}" for k, v in row.items() if k != "case"))
    return row


class Served:
    """mlx_gen's server for ``model`` on a free port, in a thread of this process."""

    def __init__(self, model: mg.LoadedModel) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            create_app(model, name="bench"), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def counter(self, name: str) -> float:
        for line in httpx.get(self.url + "/metrics", timeout=30).text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return 0.0


def body(text: str, gen: int, vocab: int, speculative: object) -> dict:
    """A greedy chat request with every control on (as ``bench_speculative.controls``)."""
    c = controls(vocab)
    return {
        "model": "bench", "messages": [{"role": "user", "content": text}],
        "max_tokens": gen, "temperature": 0.0, "min_tokens": c["min_new_tokens"],
        "logit_bias": {str(k): v for k, v in c["logit_bias"].items()},
        "suppress_tokens": c["suppress_tokens"],
        "begin_suppress_tokens": c["begin_suppress_tokens"],
        "repetition_penalty": c["repetition_penalty"],
        "presence_penalty": c["presence_penalty"], "bad_words": c["bad_words"],
        "stop": c["stop"], "logprobs": True, "top_logprobs": 5, "logprobs_mode": "both",
        "return_token_ids": True, "speculative": speculative,
    }  # fmt: skip


def wave(served: Served, requests: list[dict]) -> tuple[float, list[list[int]]]:
    """Send ``requests`` at once; (aggregate completion tokens/s, each answer's ids)."""

    def one(req: dict) -> list[int]:
        r = httpx.post(served.url + "/v1/chat/completions", json=req, timeout=600)
        r.raise_for_status()
        return r.json()["choices"][0]["token_ids"]

    start = time.perf_counter()
    with ThreadPoolExecutor(len(requests)) as pool:
        answers = list(pool.map(one, requests))
    return sum(len(a) for a in answers) / (time.perf_counter() - start), answers


def bench_server(name: str, model: mg.LoadedModel, args: argparse.Namespace) -> list[dict]:
    served, rows = Served(model), []
    try:
        prompts = {"rewrite": ("(a) rewrite", REWRITE), "story": ("(b) story", STORY)}
        for label, text in (prompts[p] for p in args.prompts.split(",")):
            for streams in (1, 4):
                on = [body(text, args.gen, model.vocab_size, {"prompt_lookup": 10})] * streams
                off = [body(text, args.gen, model.vocab_size, False)] * streams
                wave(served, [body(text, 4, model.vocab_size, False)])  # warm up
                rates: dict[str, list[float]] = {"on": [], "off": []}
                answers: dict[str, list] = {"on": [], "off": []}
                drafted0 = served.counter("mlx_gen_spec_draft_tokens_total")
                accepted0 = served.counter("mlx_gen_spec_accepted_tokens_total")
                for r in range(args.repeats):
                    order = [("on", on), ("off", off)]
                    for mode, reqs in order if r % 2 == 0 else order[::-1]:
                        tps, ids = wave(served, reqs)
                        rates[mode].append(tps)
                        answers[mode].append(ids)
                drafted = served.counter("mlx_gen_spec_draft_tokens_total") - drafted0
                accepted = served.counter("mlx_gen_spec_accepted_tokens_total") - accepted0
                first = answers["off"][0][0]
                same = all(a == first for w in answers["on"] + answers["off"] for a in w)
                p, s = statistics.median(rates["off"]), statistics.median(rates["on"])
                row = {"case": f"server {name} {label}", "streams": streams,
                       "tokens": len(first), "off_tps": p, "on_tps": s, "ratio": s / p,
                       "drafted": drafted, "accepted": accepted, "identical_output": same,
                       "off_all": rates["off"], "on_all": rates["on"]}  # fmt: skip
                print(f"{row['case']:34s} {streams} stream(s) {len(first):4d} tok  off "
                      f"{p:6.1f}  on {s:6.1f} tok/s  {s / p:5.2f}x  accepted "
                      f"{accepted:.0f}/{drafted:.0f}  identical={same}", flush=True)  # fmt: skip
                rows.append(row)
    finally:
        served.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--gen", type=int, default=80, help="max tokens per request")
    parser.add_argument("--models", default="smollm2,smollm2-f32", help="comma-separated")
    parser.add_argument("--prompts", default="rewrite,story", help="comma-separated")
    parser.add_argument("--out", help="write the results as JSON")
    args = parser.parse_args()
    rows: list[dict] = []
    for name in args.models.split(","):
        model = mg.load(None)
        if name == "smollm2-f32":
            dequantize_model(model.model)
        rows.append(batch_forward(name, model))
        rows += bench_server(name, model, args)
        if args.out:
            doc = {"environment": environment(), "repeats": args.repeats, "rows": rows}
            Path(args.out).write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
