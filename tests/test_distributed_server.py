"""The server on 2 ranks (ring, 127.0.0.1) answers exactly as the single-process server.

Each model is served twice: by ``mlx-gen-launch -n 2 -- python -m mlx_gen.server`` and by
the same app in this process; 16 concurrent requests with different controls and seeds
(and streamed ones) must get the same answers, and sequential requests the same prefix-cache
hits (``cached_tokens``). Chat with tools and thinking budgets: ``test_distributed_chat.py``.
Faults: a killed follower rank gets every
in-flight request a 503 naming it and the launcher a non-zero exit, in bounded time; a
hung one (stopped) the same after ``--rank-timeout``. No rank is left running.
"""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

import mlx_gen as mg
from mlx_gen.prefix_cache import PrefixCache
from tests.checkpoints import llama_config, write_checkpoint
from tests.conftest import STORIES
from tests.dist_server import rank_pids, same, stop, two_ranks
from tests.serving import running_server

pytestmark = pytest.mark.slow
PROMPTS = ["Once upon a time", "The little dog", "She said"]
SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = {}
    if (STORIES / "config.json").exists():
        out["stories"] = str(STORIES)
    root = tmp_path_factory.mktemp("dist-server")
    shape = {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2}
    config = llama_config(
        tie_word_embeddings=True, eos_token_id=2, max_position_embeddings=4096, **shape
    )
    write_checkpoint(root / "llama", config)
    out["llama"] = str(root / "llama")
    return out


def requests_for(name: str) -> list[dict[str, Any]]:
    """16 requests, each with its own seed and a different mix of controls."""
    out = []
    for i in range(16):
        body: dict[str, Any] = {"model": name, "prompt": PROMPTS[i % 3], "max_tokens": 16}
        body |= {"seed": 1000 + i, "temperature": (0.0, 0.8, 1.2, 1.5)[i % 4]}
        if i % 4 == 1:
            body["logit_bias"] = {"5": 4.0, "11": -100}
        if i % 4 == 2:
            body["suppress_tokens"] = [6, 7, 8]
        if i % 3 == 0:
            body["stop"] = ["e", " a"]
        if i % 2 == 1:
            body |= {"logprobs": 3, "logprobs_mode": "both" if i % 4 == 3 else "raw"}
        if i in (4, 10):
            body["response_format"] = {"type": "json_object"}
        if i == 12:
            body["response_format"] = {"type": "json_schema", "json_schema": {"schema": SCHEMA}}
        if i % 5 == 4:
            body["stream"] = True
        if i == 7:
            body["n"] = 2  # two rows of one request
        if i == 15:
            body["echo"] = True  # the prompt scored (logprobs) on every rank too
        out.append(body)
    return out


def answer(url: str, body: dict[str, Any]) -> Any:
    """The comparable part of one answer: choices (or, streamed, every chunk's choices)."""
    with httpx.Client(base_url=url, timeout=120) as client:
        if not body.get("stream"):
            r = client.post("/v1/completions", json=body)
            assert r.status_code == 200, r.text
            return r.json()["choices"]
        chunks = []
        with client.stream("POST", "/v1/completions", json=body) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    chunks.append(json.loads(line[6:])["choices"])
        return chunks


def all_answers(url: str, bodies: list[dict[str, Any]]) -> list[Any]:
    with ThreadPoolExecutor(len(bodies)) as pool:  # concurrent: they share batches
        return list(pool.map(lambda b: answer(url, b), bodies))


def disconnect(url: str, folder: str) -> None:
    """A streaming client leaves after 3 chunks: its row is freed on every rank (the
    answers that follow would differ, or the ranks fail, if the follower kept it)."""
    body = {"model": folder, "prompt": "Hi", "max_tokens": 200, "ignore_eos": True, "stream": True}
    with httpx.Client(base_url=url, timeout=60) as client:
        with client.stream("POST", "/v1/completions", json=body) as r:
            lines = r.iter_lines()
            for _ in range(3):
                next(lines)
        deadline = time.monotonic() + 20
        while client.get("/health").json()["in_flight"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get("/health").json()["in_flight"] == 0


def cache_run(url: str, folder: str) -> list[Any]:
    """Sequential requests whose prompts share prefixes: each answer's choices and
    ``cached_tokens``, then the prefix cache's counters (rank 0's under ranks)."""
    prompt = "Once upon a time there was a little dog"
    out = []
    for extra, temperature in (("", 0.0), ("", 0.9), (" who liked to play", 0.0)):
        body = {"model": folder, "prompt": prompt + extra, "max_tokens": 8, "seed": 3}
        r = httpx.post(f"{url}/v1/completions", json={**body, "temperature": temperature})
        assert r.status_code == 200, r.text
        out.append((r.json()["choices"], r.json()["usage"]["prompt_tokens_details"]))
    stats = httpx.get(f"{url}/health").json()["prompt_cache"]
    return [*out, {k: stats[k] for k in ("entries", "lookups", "hits", "cached_tokens")}]


def test_two_ranks_answer_as_one_process(models: dict[str, str]) -> None:
    for name, folder in models.items():
        bodies = requests_for(folder)
        with two_ranks(folder) as launch:
            cached = cache_run(launch.url, folder)  # first: the cache is empty
            disconnect(launch.url, folder)
            ranked = all_answers(launch.url, bodies)
            port = launch.port
        assert rank_pids(port) == []  # no rank left running
        model = mg.load(folder)  # served as by default: with a prefix cache
        with running_server(model, name=folder, prefix_cache=PrefixCache(model)) as url:
            cached_single = cache_run(url, folder)
            single = all_answers(url, bodies)
        # The prefix cache works under ranks as on one process: the same hits.
        same(cached, cached_single, f"{name} cache")
        assert cached[1][1]["cached_tokens"] > 0 and cached[2][1]["cached_tokens"] > 0
        assert cached[-1]["hits"] == 2
        for body, got, expected in zip(bodies, ranked, single, strict=True):
            same(got, expected, f"{name} {body}")
        # The controls took effect (else equality proves little).
        texts = [c[0]["text"] for c in single if isinstance(c[0], dict) and "text" in c[0]]
        assert len(set(texts)) > 4, name
        assert any(c[0]["finish_reason"] == "stop" for c in single if isinstance(c[0], dict))
        assert single[10][0]["text"].startswith("{") and single[12][0]["text"].startswith("{")


def _in_flight(url: str, bodies: list[dict[str, Any]]) -> list[Any]:
    pool = ThreadPoolExecutor(len(bodies))
    futures = [pool.submit(httpx.post, f"{url}/v1/completions", json=b, timeout=60) for b in bodies]
    pool.shutdown(wait=False)
    return futures


def _long(folder: str) -> list[dict[str, Any]]:
    return [{"model": folder, "prompt": p, "max_tokens": 3000, "ignore_eos": True} for p in PROMPTS]


def test_killed_follower_gives_503_and_a_failed_launch(models: dict[str, str]) -> None:
    folder = models["llama"]
    with two_ranks(folder) as launch:
        futures = _in_flight(launch.url, _long(folder))
        time.sleep(1.0)  # generating
        os.kill(launch.follower_pid, signal.SIGKILL)
        killed = time.monotonic()
        for future in futures:
            r = future.result(timeout=30)
            assert r.status_code == 503, r.text
            assert "rank 1" in r.json()["error"]["message"]
        status = launch.proc.wait(timeout=30)
        assert time.monotonic() - killed < 30
        assert status != 0
        assert "rank 1 was killed by signal 9" in "".join(launch.errors)
        port = launch.port
    assert rank_pids(port) == []


def test_hung_follower_gives_503_after_the_rank_timeout(models: dict[str, str]) -> None:
    folder = models["llama"]
    with two_ranks(folder, "--rank-timeout", "3") as launch:
        futures = _in_flight(launch.url, _long(folder))
        time.sleep(1.0)
        os.kill(launch.follower_pid, signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            for future in futures:
                r = future.result(timeout=30)
                assert r.status_code == 503, r.text
                assert "lost rank 1 (no step completed in 3 s)" in r.json()["error"]["message"]
            assert time.monotonic() - stopped < 30
        finally:
            # Resumed: the launcher's SIGTERM ends it (mlx.launch would wait forever on a
            # stopped rank; a SIGKILL here races with it and can leave the launcher stuck).
            os.kill(launch.follower_pid, signal.SIGCONT)
        assert launch.proc.wait(timeout=30) == 1  # rank 0 exited with status 1
        assert "rank 0 exited with status 1" in "".join(launch.errors)
        port = launch.port
    assert rank_pids(port) == []


def test_preload_warms_every_rank_and_ctrl_c_stops_them(models: dict[str, str], tmp_path) -> None:
    folder = models["llama"]
    (tmp_path / "system.txt").write_text("You are a careful assistant who answers briefly.")
    with two_ranks(folder, "--preload", str(tmp_path / "system.txt")) as launch:
        health = httpx.get(f"{launch.url}/health").json()
        assert health["status"] == "ok" and health["prompt_cache"]["entries"] >= 1
        body = {"model": folder, "prompt": "You are a careful assistant who answers briefly. Hi"}
        r = httpx.post(f"{launch.url}/v1/completions", json={**body, "max_tokens": 4}, timeout=60)
        assert r.status_code == 200, r.text  # every rank hit alike (else a 503)
        assert r.json()["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
        assert stop(launch) == 130
        assert rank_pids(launch.port) == []
