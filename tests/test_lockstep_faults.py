"""Rank 0 after a rank failure, in one process: in-flight and new requests get a 503
naming the rank, and the server is told to exit, once.

The lockstep worker runs over the 1-rank group here (its collectives are real, of one
rank); the failure is injected as the failed collective or the watchdog reports it
(``LockstepWorker.abort``). Killed and hung followers on 2 real ranks:
``tests/test_distributed_server.py``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import mlx.core as mx

import mlx_gen as mg
from mlx_gen.server.lockstep import LockstepWorker
from mlx_gen.server.rank_channel import Channel
from tests.checkpoints import llama_config, write_checkpoint
from tests.serving import running_server

LOST = "the distributed server lost rank 1 (RuntimeError: connection reset); it is stopping"


def test_in_flight_and_new_requests_get_503_naming_the_rank(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, llama_config(max_position_embeddings=4096))
    model = mg.load(tmp_path)
    workers: list[LockstepWorker] = []
    failures: list[int] = []

    def make(*args: Any, **options: Any) -> LockstepWorker:
        channel = Channel(mx.distributed.init())
        failed = lambda: failures.append(1)  # noqa: E731
        worker = LockstepWorker(*args, channel=channel, on_failure=failed, **options)
        workers.append(worker)
        return worker

    with running_server(model, name="m", make_worker=make) as url:
        body = {"model": "m", "prompt": "Once", "max_tokens": 4000, "ignore_eos": True}
        answers: list[httpx.Response] = []

        def post() -> None:
            answers.append(httpx.post(f"{url}/v1/completions", json=body, timeout=60))

        threads = [threading.Thread(target=post) for _ in range(2)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while workers[0].running < 2:
            assert time.monotonic() < deadline, "the requests never started"
            time.sleep(0.02)
        workers[0].abort(LOST)
        workers[0].abort("a later failure")  # the first message wins
        for thread in threads:
            thread.join(30)
        late = httpx.post(f"{url}/v1/completions", json=body, timeout=30)
        health = httpx.get(f"{url}/health").json()
    assert len(answers) == 2 and failures == [1]  # the server is told to exit, once
    for r in [*answers, late]:
        assert r.status_code == 503, r.text
        assert r.json()["error"]["message"] == LOST
    assert late.json()["error"]["code"] == "shutting_down"
    assert health["in_flight"] == 0
