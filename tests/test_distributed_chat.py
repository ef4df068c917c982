"""Chat on 2 ranks (ring, 127.0.0.1) answers exactly as the single-process server.

16 concurrent chat requests on a tiny Qwen3-template model with think and tool-call
markers: tools (``tool_choice`` required, auto, none), thinking budgets, a JSON schema,
logprobs (raw and processed), bias, suppression, stop strings, streamed and not, each its
own seed; ranked and single-process answers (every streamed chunk) must be the same.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

import mlx_gen as mg
from mlx_gen.prefix_cache import PrefixCache
from tests.dist_server import rank_pids, same, two_ranks
from tests.serving import running_server
from tests.tool_models import QWEN3, write_tool_model

pytestmark = pytest.mark.slow
SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
OFF = (
    "{% if enable_thinking is defined and enable_thinking is false %}"
    "<think>\n\n</think>\n\n{% endif %}"
)
# Qwen3's template with tools, opening the think block itself (as Qwen3-Thinking does).
THINK_TOOLS = QWEN3.replace(OFF, "<think>\n")
assert THINK_TOOLS != QWEN3


def _no_ids(choices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``choices`` without tool-call ids (random per call)."""
    for choice in choices:
        part = choice.get("message") or choice.get("delta") or {}
        for call in part.get("tool_calls") or []:
            call.pop("id", None)
    return choices


def _chat(url: str, body: dict[str, Any]) -> Any:
    """A chat answer's choices (streamed: every chunk's), tool-call ids left out."""
    with httpx.Client(base_url=url, timeout=180) as client:
        if not body.get("stream"):
            r = client.post("/v1/chat/completions", json=body)
            assert r.status_code == 200, r.text
            return _no_ids(r.json()["choices"])
        chunks = []
        with client.stream("POST", "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    chunks.append(_no_ids(json.loads(line[6:])["choices"]))
        return chunks


def chat_requests(folder: str, end: int) -> list[dict[str, Any]]:
    """16 chat requests: tools (each ``tool_choice``), thinking budgets, ``response_format``,
    logprobs, bias, suppression, stop strings, streamed and not, each its own seed."""
    tools = [{"type": "function", "function": {"name": "v", "parameters": SCHEMA}}]
    out = []
    for i in range(16):
        body: dict[str, Any] = {"model": folder, "messages": [{"role": "user", "content": "hi"}]}
        body |= {"seed": 2000 + i, "temperature": (0.0, 1.0, 1.3)[i % 3], "max_tokens": 40}
        if i % 2 == 0:
            body |= {"tools": tools, "max_tokens": 160}
            body["tool_choice"] = ("required", "auto", "none", "required")[i // 2 % 4]
        if i % 4 != 3:  # the rest think until max_tokens
            body["thinking_budget"] = i % 5  # 0..4 reasoning tokens, then </think>
        if i % 4 == 1:
            body["logit_bias"] = {str(end): -100}  # the budget, not the model, ends it
        if i % 5 == 3:
            body |= {"logprobs": True, "top_logprobs": 2, "logprobs_mode": "both"}
        if i % 7 == 5:
            body["suppress_tokens"] = [5, 6, 7]
        if i % 6 == 1:
            body["stop"] = ["e"]
        if i in (9, 13):
            body["response_format"] = {"type": "json_schema", "json_schema": {"schema": SCHEMA}}
        if i % 3 == 2:
            body["stream"] = True
        out.append(body)
    return out


def test_chat_tools_and_reasoning_equal_one_process(tmp_path: Path) -> None:
    markers = ["<think>", "</think>", "<tool_call>", "</tool_call>"]
    folder = str(write_tool_model(tmp_path / "q3", THINK_TOOLS, markers))
    model = mg.load(folder)
    end = model.tokenizer.encode("</think>", add_special_tokens=False)[0]
    bodies = chat_requests(folder, end)
    with two_ranks(folder) as launch:
        with ThreadPoolExecutor(len(bodies)) as pool:  # concurrent: they share batches
            ranked = list(pool.map(lambda b: _chat(launch.url, b), bodies))
        port = launch.port
    assert rank_pids(port) == []
    with running_server(model, name=folder, prefix_cache=PrefixCache(model)) as url:
        with ThreadPoolExecutor(len(bodies)) as pool:
            single = list(pool.map(lambda b: _chat(url, b), bodies))
    for body, got, expected in zip(bodies, ranked, single, strict=True):
        same(got, expected, f"chat {body}")
    # The controls acted (else equality proves little): the grammar made tool calls,
    # a budget ended a think block, a schema shaped the content.
    plain = [c[0] for c in single if "message" in c[0]]
    assert any(c["finish_reason"] == "tool_calls" for c in plain)
    assert any(c["message"].get("reasoning_content") is not None for c in plain)
    assert all(single[i][0]["message"]["content"].startswith("{") for i in (9, 13))
