"""The server as a process: its ready line, Ctrl-C, bad options, and a load/fault test.

Load: two rounds of 200 requests from 32 concurrent clients on stories260K; 20% of the
clients drop their stream after the first chunk and 10% send malformed requests. Every
well-formed completed answer must equal ``mlx_gen.generate``, every malformed request
get a 400, ``/health`` answer afterwards, and the server's resident memory not grow by
more than 10% from the first round to the second.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

import mlx_gen as mg
from tests.conftest import STORIES

S = mg.GenerationSettings
ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ["Once upon a time", "Lily had a", "The dog", "Tom and Sue went", "One day, a bird"]
MALFORMED = [
    b"{not json",
    b'{"model": "stories", "prompt": "x", "temperature": -1}',
    b'{"model": "stories", "prompt": "x", "logprobs": 50}',
    b'{"model": "stories", "prompt": [1, 99999]}',
    b'{"model": "stories"}',
]


def start_server(*args: str) -> tuple[subprocess.Popen, str]:
    """Start ``python -m mlx_gen.server`` on a free port; return it and its base URL."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlx_gen.server", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    line = proc.stdout.readline()
    if "ready on" not in line:
        proc.kill()
        raise RuntimeError(f"no ready line: {line!r} {proc.stderr.read()}")
    return proc, line.split("ready on ")[1].strip().removesuffix("/v1")


def stop_server(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def test_bad_option_is_one_error_line():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(
        [sys.executable, "-m", "mlx_gen.server", "--max-batch-size", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["error: --max-batch-size 0 is invalid (expected >= 1)"]


def _request(client: httpx.Client, base: str, i: int) -> tuple[str, object]:
    prompt, seed = PROMPTS[i % len(PROMPTS)], i % 3
    body = {"model": "stories", "prompt": prompt, "max_tokens": 8, "temperature": 0.8, "seed": seed}
    if i % 10 == 0:
        r = client.post(
            base + "/v1/completions",
            content=MALFORMED[(i // 10) % len(MALFORMED)],
            headers={"content-type": "application/json"},
        )
        return "malformed", r.status_code
    if i % 5 == 1:
        with client.stream("POST", base + "/v1/completions", json={**body, "stream": True}) as r:
            next(r.iter_lines())
        return "dropped", None
    r = client.post(base + "/v1/completions", json=body)
    return "good", (prompt, seed, r.status_code, r.json()["choices"][0]["text"])


def _round(base: str, refs: dict) -> None:
    with httpx.Client(timeout=120) as client, ThreadPoolExecutor(32) as pool:
        results = list(pool.map(lambda i: _request(client, base, i), range(200)))
    kinds = [k for k, _ in results]
    assert kinds.count("malformed") == 20 and kinds.count("dropped") == 40
    for kind, value in results:
        if kind == "malformed":
            assert value == 400
        elif kind == "good":
            prompt, seed, status, text = value
            assert status == 200 and text == refs[prompt, seed]


def test_load_with_disconnects_and_malformed_requests():
    if not (STORIES / "config.json").exists():
        pytest.skip(f"{STORIES} is absent")
    model = mg.load(STORIES)
    refs = {
        (p, seed): mg.generate(model, p, settings=S(max_tokens=8, temperature=0.8, seed=seed)).text
        for p in PROMPTS
        for seed in range(3)
    }
    proc, base = start_server(
        "--model",
        str(STORIES),
        "--model-name",
        "stories",
        "--max-batch-size",
        "16",
        "--max-queue",
        "256",
    )
    try:
        _round(base, refs)
        first = rss_kb(proc.pid)
        _round(base, refs)
        second = rss_kb(proc.pid)
        health = httpx.get(base + "/health").json()
        assert health["status"] == "ok"
        print(f"server RSS after round 1: {first} kB, after round 2: {second} kB")
        assert second <= first * 1.10, (first, second)
    finally:
        assert stop_server(proc) == 0  # Ctrl-C shuts down cleanly
    assert "Traceback" not in proc.stderr.read()
