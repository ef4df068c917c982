"""Disconnects free their place, a failing request fails alone, conversations never mix."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

import mlx_gen as mg
from mlx_gen.server.jobs import Done, Failed, Job, ShuttingDown
from mlx_gen.server.worker import Worker
from mlx_gen.stream import GenerationChunk
from tests.checkpoints import llama_config, write_checkpoint
from tests.serving import running_server

S = mg.GenerationSettings


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("robust") / "llama"
    config = llama_config(eos_token_id=2, max_position_embeddings=8192)
    write_checkpoint(folder, config, generation_config={"eos_token_id": 2})
    return mg.load(folder)


def _health(base: str) -> dict:
    return httpx.get(base + "/health").json()


def test_a_disconnected_stream_frees_its_place(model):
    with running_server(model, max_batch_size=1, max_queue=0) as base:
        body = {
            "model": "test",
            "messages": [{"role": "user", "content": "go on"}],
            "max_tokens": 8000,
            "ignore_eos": True,
            "stream": True,
        }
        with httpx.stream("POST", base + "/v1/chat/completions", json=body) as r:
            lines = r.iter_lines()
            assert next(lines).startswith("data: ")
            next(lines)
        deadline = time.monotonic() + 10
        while _health(base)["in_flight"] and time.monotonic() < deadline:
            time.sleep(0.05)
        health = _health(base)
        assert health["in_flight"] == 0
        assert health["generated_tokens"] < 4000  # stopped long before its 8000 tokens
        client = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0)
        r = client.chat.completions.create(
            model="test", messages=[{"role": "user", "content": "next"}], max_tokens=3
        )
        assert r.choices[0].finish_reason in ("length", "stop")


def _collect(worker: Worker, jobs_settings: list[tuple[list[int], S]]) -> list[list]:
    events: list[list] = [[] for _ in jobs_settings]
    finished = threading.Semaphore(0)

    def emitter(i):
        def emit(event):
            events[i].append(event)
            if isinstance(event, (Done, Failed)):
                finished.release()

        return emit

    jobs = [Job(ids, s, emitter(i)) for i, (ids, s) in enumerate(jobs_settings)]
    worker.submit(jobs)
    for _ in jobs:
        assert finished.acquire(timeout=60)
    return events


def test_a_failing_processor_fails_its_request_alone(model):
    def boom(logits, ctx):
        if ctx.step == 3:
            raise RuntimeError("boom at step 3")
        return logits

    worker = Worker(model, max_batch_size=4, max_queue=4)
    worker.start()
    try:
        good = S(max_tokens=10, temperature=1.0, seed=7, ignore_eos=True)
        bad = S(max_tokens=10, logits_processors=[boom], ignore_eos=True)
        events = _collect(worker, [([1, 5, 6], bad), ([1, 8, 9, 10], good), ([1, 5, 6], good)])
    finally:
        worker.stop()
    failed = events[0]
    assert isinstance(failed[-1], Failed) and "boom at step 3" in failed[-1].message
    assert len([e for e in failed if isinstance(e, GenerationChunk)]) == 3
    for ids, evs in (([1, 8, 9, 10], events[1]), ([1, 5, 6], events[2])):
        assert isinstance(evs[-1], Done)
        tokens = [e.token for e in evs if isinstance(e, GenerationChunk)]
        assert tokens == mg.generate(model, ids, settings=good).token_ids
    assert worker.in_flight == 0


def test_two_conversations_sharing_a_system_prompt_never_mix(model):
    system = {"role": "system", "content": "You are a helpful assistant who tells stories."}
    conversations = [
        [system, {"role": "user", "content": "Tell me about the sea."}],
        [system, {"role": "user", "content": "Tell me about the word"}],
    ]
    settings = S(max_tokens=12, ignore_eos=True)
    refs = [mg.generate(model, messages=c, settings=settings).text for c in conversations]
    with running_server(model, max_batch_size=2) as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0)

        def ask(messages):
            r = client.chat.completions.create(
                model="test", messages=messages, max_tokens=12, extra_body={"ignore_eos": True}
            )
            return r.choices[0].message.content

        for order in (conversations, conversations[::-1], conversations * 3):
            with ThreadPoolExecutor(len(order)) as pool:
                answers = list(pool.map(ask, order))
            assert answers == [refs[conversations.index(c)] for c in order]


def test_a_stopping_worker_fails_pending_jobs_and_refuses_new_ones(model):
    worker = Worker(model, max_batch_size=1, max_queue=4)
    events: list = []
    worker.start()
    worker.submit([Job([1, 2], S(max_tokens=2000, ignore_eos=True), events.append)])
    worker.stop()
    assert isinstance(events[-1], Failed) and "shutting down" in events[-1].message
    with pytest.raises(ShuttingDown):
        worker.submit([Job([1, 2], S(max_tokens=1), events.append)])
