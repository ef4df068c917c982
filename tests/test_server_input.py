"""Request values the server must refuse with a 400 naming the field, and exact counts.

Strict JSON types (no ``"3"`` for an int, no ``true`` for a number), finite numbers only
(``NaN`` and ``±Infinity``, which Python's JSON parser accepts, are refused), canonical
``logit_bias`` keys, text that is valid Unicode (no lone surrogate), and usage counts
that count generated tokens only (not the final "no token" chunk).
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest

import mlx_gen as mg
from tests.checkpoints import VOCAB_SIZE, llama_config, write_checkpoint
from tests.serving import running_server

S = mg.GenerationSettings
CHAT = [{"role": "user", "content": "x"}]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("input") / "llama"
    write_checkpoint(folder, llama_config(eos_token_id=2), generation_config={"eos_token_id": 2})
    return mg.load(folder)


@pytest.fixture(scope="module")
def url(model):
    with running_server(model, max_batch_size=4) as base:
        yield base


def _post(url: str, path: str, raw: str) -> httpx.Response:
    """Post ``raw`` JSON text as is (json= would refuse NaN and lone surrogates)."""
    headers = {"content-type": "application/json"}
    return httpx.post(url + path, content=raw.encode("utf-8"), headers=headers, timeout=60)


CHAT_RAW = '"model": "test", "messages": [{"role": "user", "content": "x"}]'
BAD = [
    ("/v1/chat/completions", '"logit_bias": {"5": NaN}', "logit_bias.5"),
    ("/v1/chat/completions", '"logit_bias": {"5": Infinity}', "logit_bias.5"),
    ("/v1/chat/completions", '"logit_bias": {"5": -Infinity}', "logit_bias.5"),
    ("/v1/chat/completions", '"temperature": NaN', "temperature"),
    ("/v1/chat/completions", '"max_tokens": "3"', "max_tokens"),
    ("/v1/chat/completions", '"max_tokens": true', "max_tokens"),
    ("/v1/chat/completions", '"temperature": "0.5"', "temperature"),
    ("/v1/chat/completions", '"n": 2.0', "n"),
    ("/v1/chat/completions", '"stream": "yes"', "stream"),
    ("/v1/chat/completions", '"logit_bias": {"1_0": 1}', "logit_bias"),
    ("/v1/chat/completions", '"logit_bias": {" 7 ": 1}', "logit_bias"),
    ("/v1/chat/completions", '"logit_bias": {"+7": 1}', "logit_bias"),
    ("/v1/chat/completions", '"logit_bias": {"07": 1}', "logit_bias"),
]


@pytest.mark.parametrize(("path", "extra", "param"), BAD)
def test_lax_or_non_finite_values_are_400(url, path, extra, param):
    r = _post(url, path, "{" + CHAT_RAW + ", " + extra + "}")
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error", error


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/completions", '{"prompt": [true, false]}', "prompt"),
        ("/v1/completions", '{"prompt": "a\\ud800"}', "prompt"),
        ("/v1/completions", '{"prompt": ["ok", "a\\ud800"], "echo": true}', "prompt"),
        ("/v1/completions", '{"prompt": "ok", "stop": ["\\udfff"]}', "stop"),
        ("/tokenize", '{"prompt": "a\\ud800"}', "prompt"),
        ("/v1/chat/completions", '{"messages": [{"role": "user", "content": "\\ud800"}]}', None),
    ],
)
def test_booleans_as_ids_and_lone_surrogates_are_400(url, path, body, param):
    r = _post(url, path, body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert param is None or error["param"].split(".")[0] == param, error
    assert "surrogate" in error["message"] or "valid" in error["message"]


def test_canonical_logit_bias_keys_still_work(url):
    body = {"model": "test", "messages": CHAT, "max_tokens": 3, "logit_bias": {"77": 100}}
    r = httpx.post(url + "/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text


def test_usage_counts_generated_tokens_only(model, url):
    # Every id banned at the first step: the run ends with no token generated.
    everything = list(range(VOCAB_SIZE))
    for path, prompt in (("/v1/completions", {"prompt": [1, 5, 6]}), ("/v1/chat/completions", {})):
        body = {"model": "test", "messages": CHAT, **prompt, "max_tokens": 4}
        body |= {"begin_suppress_tokens": everything, "return_token_ids": True}
        r = httpx.post(url + path, json=body, timeout=60).json()
        assert r["usage"]["completion_tokens"] == 0, r
        assert r["choices"][0]["token_ids"] == []
        stream = {**body, "stream": True, "stream_options": {"include_usage": True}}
        with httpx.stream("POST", url + path, json=stream, timeout=60) as s:
            lines = [ln for ln in s.iter_lines() if ln.startswith("data: {")]
        assert '"completion_tokens":0' in lines[-1], lines[-1]
    settings = S(max_tokens=5, ignore_eos=True)
    ref = mg.generate(model, [1, 5, 6], settings=settings)
    body = {"model": "test", "prompt": [1, 5, 6], "max_tokens": 5, "ignore_eos": True}
    r = httpx.post(url + "/v1/completions", json=body, timeout=60).json()
    assert r["usage"]["completion_tokens"] == len(ref.token_ids) == 5


def test_completions_return_logprob_token_ids(model, url):
    settings = S(max_tokens=4, logprobs=1, logprob_token_ids=[7, 9])
    ref = mg.generate(model, [1, 5, 6], settings=settings)
    body = {"model": "test", "prompt": [1, 5, 6], "max_tokens": 4, "logprobs": 1}
    r = httpx.post(url + "/v1/completions", json=body | {"logprob_token_ids": [7, 9]}, timeout=60)
    extra = r.json()["choices"][0]["logprobs"]["token_id_logprobs"]
    assert len(extra) == len(ref.logprobs) == 4
    for got, lp in zip(extra, ref.logprobs, strict=True):
        np.testing.assert_allclose([got["7"], got["9"]], list(lp["raw"].extra.values()), atol=1e-4)
