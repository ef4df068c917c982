"""The server's shared prefix cache on the embedded SmolLM2: cached_tokens, cold == warm,
isolation of 16 concurrent conversations sharing a system prompt, cancellation, the
budget with the running batch, and the flags."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

import mlx_gen
from mlx_gen import GenerationSettings, PrefixCache, generate_tokens
from mlx_gen.server.main import build_parser
from mlx_gen.server.prompt_cache_flags import open_cache, save_cache
from tests.serving import running_server

pytestmark = pytest.mark.slow
SYSTEM = {"role": "system", "content": "You are a terse assistant. Answer in one short line."}


@pytest.fixture(scope="module")
def model():
    return mlx_gen.load()


def chat(url, messages, max_tokens=6):
    """``(token ids, logprobs, cached_tokens, text)`` of one greedy chat request."""
    body = {
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "logprobs": True,
        "return_token_ids": True,
    }
    r = httpx.post(url + "/v1/chat/completions", json=body, timeout=300).json()
    choice = r["choices"][0]
    lps = [e["logprob"] for e in choice["logprobs"]["content"]]
    cached = r["usage"]["prompt_tokens_details"]["cached_tokens"]
    return choice["token_ids"], lps, cached, choice["message"]["content"]


def conversation(url, user, turns=2):
    messages, out = [SYSTEM, {"role": "user", "content": user}], []
    for turn in range(turns):
        ids, lps, cached, text = chat(url, messages)
        out.append((ids, lps, cached))
        messages += [
            {"role": "assistant", "content": text},
            {"role": "user", "content": f"Say it again, {turn}."},
        ]
    return out


def assert_same(cold, warm):
    for (c_ids, c_lps, _), (w_ids, w_lps, _) in zip(cold, warm, strict=True):
        assert w_ids == c_ids
        assert max(abs(a - b) for a, b in zip(c_lps, w_lps, strict=True)) <= 1e-4


def test_cached_tokens_are_reported_and_warm_equals_cold(model):
    with running_server(model) as cold_url:
        cold = conversation(cold_url, "Name a fruit.", turns=3)
    cache = PrefixCache(model, max_bytes=256 << 20)
    with running_server(model, prefix_cache=cache) as url:
        warm = conversation(url, "Name a fruit.", turns=3)
        again = conversation(url, "Name a fruit.", turns=1)
        health = httpx.get(url + "/health").json()["prompt_cache"]
    assert_same(cold, warm)
    assert_same(cold[:1], again)
    assert [c for *_, c in cold] == [0, 0, 0]
    assert warm[0][2] == 0 and warm[1][2] > 30 and warm[2][2] > warm[1][2]
    assert again[0][2] > 25  # the first turn's prompt (all but its last id) is cached
    assert health["bytes"] <= health["max_bytes"] and health["hits"] >= 3


STORY = "Once upon a time there was a little girl named Lily. She loved to play outside."


@pytest.fixture(scope="module")
def stories():
    from tests.conftest import STORIES

    if not (STORIES / "config.json").exists():
        pytest.skip(f"{STORIES} is absent")
    return mlx_gen.load(STORIES)


def complete(url, ids):
    """``(generated ids, logprobs, cached_tokens)`` of one greedy completion of ``ids``."""
    body = {
        "prompt": ids,
        "max_tokens": 6,
        "temperature": 0,
        "logprobs": 0,
        "return_token_ids": True,
    }
    r = httpx.post(url + "/v1/completions", json=body, timeout=300).json()
    choice = r["choices"][0]
    cached = r["usage"]["prompt_tokens_details"]["cached_tokens"]
    return choice["token_ids"], choice["logprobs"]["token_logprobs"], cached


def cold_run(model, ids):
    """The same greedy request through the Python API, no cache."""
    settings = GenerationSettings(max_tokens=6, temperature=0.0, logprobs=0)
    out = list(generate_tokens(model, ids, settings))
    return [t.token for t in out], [t.logprobs["raw"].logprob for t in out], 0


def test_16_concurrent_conversations_sharing_a_system_prompt_stay_private(stories):
    system = stories.tokenizer.encode(STORY)
    users = [
        stories.tokenizer.encode(f" Day {i}: the dog", add_special_tokens=False) for i in range(16)
    ]

    def two_turns(url, user):
        first = complete(url, system + user)
        second_ids = system + user + first[0] + users[0][-2:]
        return [first, complete(url, second_ids)], second_ids

    cache = PrefixCache(stories, max_bytes=64 << 20)
    with running_server(stories, prefix_cache=cache) as url, ThreadPoolExecutor(16) as pool:
        runs = list(pool.map(lambda u: two_turns(url, u), users))
        health = httpx.get(url + "/health").json()["prompt_cache"]
    for user, (warm, second_ids) in zip(users, runs, strict=True):
        assert_same([cold_run(stories, system + user), cold_run(stories, second_ids)], warm)
        assert warm[1][2] >= len(system + user)  # each second turn reuses its own first
    assert sum(w[0][2] for w, _ in runs) > 0  # first turns share the system prompt
    assert health["bytes"] <= health["max_bytes"] and cache.measure() == cache.nbytes


def test_a_cancelled_stream_leaves_the_cache_exact(model):
    messages = [SYSTEM, {"role": "user", "content": "Count slowly from one to twenty."}]
    with running_server(model) as cold_url:
        cold = chat(cold_url, messages, max_tokens=12)
    cache = PrefixCache(model, max_bytes=256 << 20)
    with running_server(model, prefix_cache=cache) as url:
        body = {"messages": messages, "max_tokens": 40, "temperature": 0, "stream": True}
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60) as r:
            for n, _ in enumerate(r.iter_lines()):
                if n >= 4:
                    break  # the client goes away mid-decode
        warm = chat(url, messages, max_tokens=12)
    assert warm[0] == cold[0] and warm[2] > 0
    assert max(abs(a - b) for a, b in zip(cold[1], warm[1], strict=True)) <= 1e-4


def test_the_running_batch_counts_against_the_budget(model):
    # Two rows of 256 positions (the batch cache's step) take ~24 MB; ~8 MB is left.
    cache = PrefixCache(model, max_bytes=32 << 20)
    with running_server(model, prefix_cache=cache) as url, ThreadPoolExecutor(2) as pool:
        users = [f"Tell me about the number {i} in a sentence or two." for i in range(12)]
        list(pool.map(lambda u: chat(url, [{"role": "user", "content": u}]), users))
        health = httpx.get(url + "/health").json()["prompt_cache"]
    assert 0 < health["bytes"] <= health["max_bytes"] and health["evicted"] > 0


def test_flags_preload_and_contradictions(model, tmp_path):
    system = tmp_path / "system.txt"
    system.write_text(SYSTEM["content"])
    args = build_parser().parse_args(["--prompt-cache-bytes", "64M", "--preload", str(system)])
    cache = open_cache(model, args)
    assert cache.max_bytes == 64 << 20 and len(cache) == 2
    with running_server(model, prefix_cache=cache) as url:
        _, _, cached, _ = chat(url, [SYSTEM, {"role": "user", "content": "Hi."}])
    rendered = model.tokenizer.apply_chat_template([SYSTEM])
    assert cached >= len(rendered)
    assert open_cache(model, build_parser().parse_args(["--no-prompt-cache"])) is None
    bad = build_parser().parse_args(["--no-prompt-cache", "--preload", str(system)])
    with pytest.raises(ValueError, match="--preload contradicts --no-prompt-cache"):
        open_cache(model, bad)


def test_the_cache_folder_survives_a_restart(stories, tmp_path):
    flags = ["--prompt-cache-dir", str(tmp_path / "pc"), "--prompt-cache-dir-bytes", "1M"]
    args = build_parser().parse_args(flags)
    ids = stories.tokenizer.encode(STORY)
    cache = open_cache(stories, args)
    with running_server(stories, prefix_cache=cache) as url:
        first = complete(url, ids)
    save_cache(cache, args)  # what main() does at shutdown
    again = open_cache(stories, args)
    assert again.keys() == cache.keys() and again.nbytes <= 1 << 20
    with running_server(stories, prefix_cache=again) as url:
        warm = complete(url, ids)
    assert warm[0] == first[0] and first[2] == 0 and warm[2] == len(ids) - 1
