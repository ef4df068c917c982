"""``GET /metrics``: Prometheus' text format, counters that move by exactly what a test
sends, the worker's hooks, and ``/v1/models``' capabilities."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import anthropic
import httpx
import openai
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

import mlx_gen as mg
from mlx_gen.server.app import create_app
from mlx_gen.server.metrics import EngineMetrics, PrometheusMetrics
from tests.checkpoints import llama_config, write_checkpoint
from tests.serving import running_server

USER = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("metrics") / "llama"
    write_checkpoint(
        folder,
        llama_config(eos_token_id=2),
        generation_config={"eos_token_id": [3, 2], "bos_token_id": 1},
    )
    return mg.load(folder)


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample of ``/metrics`` as ``{(name, sorted labels): value}``."""
    r = httpx.get(url + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def delta(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_counters_move_by_exactly_what_is_sent(model):
    with running_server(model, max_batch_size=4) as url:
        before = scrape(url)
        assert before[("mlx_gen_running_requests", ())] == 0
        assert before[("mlx_gen_queue_depth", ())] == 0
        chat = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        claude = anthropic.Anthropic(base_url=url, api_key="x", max_retries=0)
        prompt = generated = 0
        started = time.perf_counter()
        for n in (3, 5):
            c = chat.chat.completions.create(
                model="test", messages=USER, max_tokens=n, extra_body={"ignore_eos": True}
            )
            prompt, generated = prompt + c.usage.prompt_tokens, generated + n
        m = claude.messages.create(
            model="test", max_tokens=4, messages=USER, extra_body={"ignore_eos": True}
        )
        r = chat.responses.create(
            model="test", input="hello", max_output_tokens=6, extra_body={"ignore_eos": True}
        )
        prompt += m.usage.input_tokens + r.usage.input_tokens
        generated += 4 + 6
        with pytest.raises(openai.NotFoundError):
            chat.chat.completions.create(model="nope", messages=USER)
        httpx.post(url + "/v1/messages", json={"messages": USER})  # 400: no max_tokens
        elapsed = time.perf_counter() - started
        after = scrape(url)
    requests = "mlx_gen_requests_total"
    assert delta(before, after, requests, endpoint="/v1/chat/completions", status="200") == 2
    assert delta(before, after, requests, endpoint="/v1/chat/completions", status="404") == 1
    assert delta(before, after, requests, endpoint="/v1/messages", status="200") == 1
    assert delta(before, after, requests, endpoint="/v1/messages", status="400") == 1
    assert delta(before, after, requests, endpoint="/v1/responses", status="200") == 1
    assert delta(before, after, requests, endpoint="/metrics", status="200") == 1  # the first
    assert delta(before, after, "mlx_gen_prompt_tokens_total") == prompt
    assert delta(before, after, "mlx_gen_generation_tokens_total") == generated
    # One first token per request, the rest between tokens.
    assert delta(before, after, "mlx_gen_time_to_first_token_seconds_count") == 4
    assert delta(before, after, "mlx_gen_time_per_output_token_seconds_count") == generated - 4
    # Seconds, within the requests' wall time (the four ran one after another).
    ttft = delta(before, after, "mlx_gen_time_to_first_token_seconds_sum")
    tpot = delta(before, after, "mlx_gen_time_per_output_token_seconds_sum")
    assert 0 < ttft and 0 < tpot and ttft + tpot < elapsed
    assert after[("mlx_gen_running_requests", ())] == after[("mlx_gen_queue_depth", ())] == 0


def test_hooks_for_the_prefix_cache_and_speculation():
    """The functions the prefix cache and speculative decoding call (no-ops by default)."""
    EngineMetrics().prefix_cache(hit_tokens=3, hit_bytes=10)  # the worker's default
    metrics = PrometheusMetrics(lambda: 2, lambda: 5)
    metrics.prefix_cache(hit_tokens=12, hit_bytes=4096)
    metrics.speculation(drafted=4, accepted=3)
    metrics.speculation(drafted=4, accepted=1)
    text = metrics.exposition().decode()
    values = {
        s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples
    }
    assert values["mlx_gen_prefix_cache_hit_tokens_total"] == 12
    assert values["mlx_gen_prefix_cache_hit_bytes_total"] == 4096
    assert values["mlx_gen_spec_draft_tokens_total"] == 8
    assert values["mlx_gen_spec_accepted_tokens_total"] == 4
    assert values["mlx_gen_running_requests"] == 2 and values["mlx_gen_queue_depth"] == 3


def test_models_card_and_metrics_need_the_key(model):
    with running_server(model, api_key="k") as url:
        assert httpx.get(url + "/metrics").status_code == 401
        headers = {"Authorization": "Bearer k"}
        card = httpx.get(url + "/v1/models", headers=headers).json()["data"][0]
        assert httpx.get(url + "/metrics", headers={"x-api-key": "k"}).status_code == 200
    assert card["context_length"] == card["max_model_len"] == 256
    assert card["vocab_size"] == model.vocab_size
    assert card["capabilities"] == {
        "structured_output": True,
        "tools": True,
        "tool_format": "generic",  # its template has no tool markers
        "reasoning": False,  # no <think> token
    }


def test_an_unexpected_error_counts_as_a_500(model):
    app = create_app(model, name="test")

    @app.get("/boom")
    async def boom():
        raise RuntimeError("boom")

    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/boom").status_code == 500
        text = client.get("/metrics").text
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert values[("mlx_gen_requests_total", (("endpoint", "other"), ("status", "500")))] == 1


def test_an_unexpected_error_on_messages_is_anthropic_shaped(model):
    app = create_app(model, name="test")

    @app.post("/v1/messages/boom")
    async def boom():
        raise RuntimeError("boom")

    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post("/v1/messages/boom")
    assert r.status_code == 500
    assert r.json() == {
        "type": "error",
        "error": {"type": "api_error", "message": "internal error: RuntimeError"},
    }


def test_running_and_queue_depth_gauges(model):
    """One place in the batch: a long stream runs, the next request waits in the queue."""
    with running_server(model, max_batch_size=1, max_queue=4) as url:
        chat = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        stream = chat.chat.completions.create(
            model="test", messages=USER, max_tokens=200, stream=True,
            extra_body={"ignore_eos": True},
        )  # fmt: skip
        next(iter(stream))
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(
                chat.chat.completions.create, model="test", messages=USER, max_tokens=2
            )
            deadline, values = time.monotonic() + 20, {}
            while time.monotonic() < deadline:
                values = scrape(url)
                if values[("mlx_gen_queue_depth", ())] == 1:
                    break
                time.sleep(0.05)
            assert values[("mlx_gen_queue_depth", ())] == 1
            assert values[("mlx_gen_running_requests", ())] == 1
            stream.close()  # frees the place: the waiting request runs
            assert waiting.result(timeout=60).usage.completion_tokens == 2


def test_prefix_cache_counters_move_by_the_reused_tokens_and_their_kv_bytes(model):
    """A repeated prompt through a server with a prefix cache: the hit counters move by
    the ``cached_tokens`` the replies report, and by those tokens' K and V bytes (the
    entry reused holds more: the prompt and the fed tokens of the first reply)."""
    cache = mg.PrefixCache(model, max_bytes=64 << 20)
    with running_server(model, prefix_cache=cache) as url:
        chat = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        before = scrape(url)
        cached = []
        for _ in range(3):
            c = chat.chat.completions.create(model="test", messages=USER, max_tokens=3)
            cached.append(c.usage.prompt_tokens_details.cached_tokens)
        after = scrape(url)
    assert cached[0] == 0 and cached[1] == cached[2] == c.usage.prompt_tokens - 1
    assert delta(before, after, "mlx_gen_prefix_cache_hit_tokens_total") == sum(cached)
    config, weights = model.config, model.model.model.layers[0].self_attn.k_proj.weight
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    per_token = (
        config["num_hidden_layers"] * 2 * config["num_key_value_heads"] * head_dim
    ) * weights.dtype.size  # K and V of every layer
    assert delta(before, after, "mlx_gen_prefix_cache_hit_bytes_total") == sum(cached) * per_token
