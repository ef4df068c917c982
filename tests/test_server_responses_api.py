"""OpenAI's ``/v1/responses`` through the official ``openai`` SDK's ``client.responses``.

Stateless: the answer must be the chat endpoint's for the same prompt, settings and
seed; the stream's typed events come in the documented order with consecutive sequence
numbers; ``text.format`` json_schema is structured output.
"""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

import mlx_gen as mg
from tests.checkpoints import llama_config, write_checkpoint
from tests.serving import running_server

USER = [{"role": "user", "content": "hello"}]
SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 9}},
    "required": ["a"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("responses") / "llama"
    write_checkpoint(
        folder,
        llama_config(eos_token_id=2),
        generation_config={"eos_token_id": [3, 2], "bos_token_id": 1},
    )
    return mg.load(folder)


@pytest.fixture(scope="module")
def url(model):
    with running_server(model, max_batch_size=4) as base:
        yield base


@pytest.fixture(scope="module")
def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


@pytest.mark.parametrize("settings", [{"temperature": 0.0}, {"temperature": 1.0, "seed": 11}])
def test_text_streamed_equals_non_streamed_and_chat(client, settings):
    seed = {"seed": settings["seed"]} if "seed" in settings else {}
    temperature = settings["temperature"]
    r = client.responses.create(
        model="test", input="hello", max_output_tokens=12, temperature=temperature,
        extra_body=seed,
    )  # fmt: skip
    assert r.object == "response" and r.output[0].type == "message"
    c = client.chat.completions.create(
        model="test", messages=USER, max_tokens=12, temperature=temperature, **seed
    )
    assert r.output_text == c.choices[0].message.content
    assert r.usage.output_tokens == c.usage.completion_tokens
    assert r.usage.input_tokens == c.usage.prompt_tokens
    finished = c.choices[0].finish_reason == "length"
    assert r.status == ("incomplete" if finished else "completed")
    events = list(
        client.responses.create(
            model="test", input="hello", max_output_tokens=12, temperature=temperature,
            stream=True, extra_body=seed,
        )
    )  # fmt: skip
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == r.output_text
    assert events[-1].response.output_text == r.output_text


def test_stream_events_in_order(client):
    events = list(
        client.responses.create(
            model="test", input=[{"role": "user", "content": "hello"}], max_output_tokens=40,
            temperature=0.0, stream=True, extra_body={"ignore_eos": True},
        )
    )  # fmt: skip
    kinds = [e.type for e in events]
    head = ["response.created", "response.in_progress", "response.output_item.added",
            "response.content_part.added"]  # fmt: skip
    tail = ["response.output_text.done", "response.content_part.done",
            "response.output_item.done", "response.incomplete"]  # fmt: skip
    assert kinds[:4] == head and kinds[-4:] == tail
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert [e.sequence_number for e in events] == list(range(len(events)))
    # The SDK parsed each into its typed class (not a fallback).
    assert type(events[4]).__name__ == "ResponseTextDeltaEvent"
    item_id = events[2].item.id
    assert all(e.item_id == item_id for e in events[3:-2] if hasattr(e, "item_id"))
    final = events[-1].response
    assert final.status == "incomplete" and final.incomplete_details.reason == "max_output_tokens"
    assert final.output[0].id == item_id and final.usage.output_tokens == 40
    assert events[-4].text == final.output_text == events[-3].part.text


def test_raw_events_validate_against_the_sdk_types(url):
    """Each event, read raw, validates strictly as the SDK's type (the client is lenient)."""
    adapter = TypeAdapter(ResponseStreamEvent)
    body = {"input": "hello", "max_output_tokens": 6, "temperature": 0, "stream": True}
    names, events = [], []
    with httpx.stream("POST", url + "/v1/responses", json=body, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("event: "):
                names.append(line[7:])
            elif line.startswith("data: "):
                events.append(adapter.validate_json(line[6:]))
    assert names == [e.type for e in events] and events[-1].type == "response.incomplete"
    Response.model_validate(events[-1].response.model_dump())


def test_instructions_items_and_envelope(client, url, model):
    r = client.responses.create(
        model="test", instructions="be brief", max_output_tokens=8, temperature=0.0,
        input=[
            {"role": "user", "content": "hi"},
            {"type": "message", "role": "assistant",
             "content": [{"type": "output_text", "text": "hello"}]},
            {"role": "user", "content": [{"type": "input_text", "text": "again"}]},
        ],
    )  # fmt: skip
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "again"},
    ]
    want = mg.generate(
        model, messages=messages, settings=mg.GenerationSettings(max_tokens=8, temperature=0.0)
    )
    assert r.output_text == want.text
    raw = httpx.post(url + "/v1/responses", json={"input": "x", "max_output_tokens": 2}).json()
    Response.model_validate(raw)
    assert raw["store"] is False and raw["instructions"] is None and raw["tools"] == []


@pytest.mark.parametrize("seed", [1, 2])
def test_text_format_json_schema(client, seed):
    fmt = {"type": "json_schema", "name": "t", "schema": SCHEMA, "strict": True}
    r = client.responses.create(
        model="test", input="json", max_output_tokens=60, temperature=1.0, text={"format": fmt},
        extra_body={"seed": seed},
    )  # fmt: skip
    assert r.status == "completed"
    jsonschema.validate(json.loads(r.output_text), SCHEMA)


def _error(r: httpx.Response, param: str) -> str:
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    return error["message"]


@pytest.mark.parametrize(
    ("extra", "param", "words"),
    [
        ({"store": True}, "store", "stateless"),
        ({"previous_response_id": "resp_1"}, "previous_response_id", "stateless"),
        ({"background": True}, "background", "stateless"),
        ({"tools": [{"type": "web_search"}]}, "tools[0]", "hosted tools"),
        ({"tools": [{"type": "function", "name": "f", "parameters": {}}],
          "tool_choice": {"type": "function", "name": "zz"}}, "tool_choice", "not a declared"),
        ({"tool_choice": {"type": "file_search"}}, "tool_choice", "not supported"),
        ({"reasoning": {"effort": "huge"}}, "reasoning.effort", "not valid"),
        ({"reasoning": {"effort": "low"}}, "reasoning", "needs a reasoning model"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
         "input[0].content[0]", "input_image"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0]", "item_reference"),
        # wrongly typed values inside items: a 400 naming them, never a 500
        ({"input": [{"role": "user", "content": {"a": 1}}]}, "input[0].content", "a string"),
        ({"input": [{"role": "user", "content": [5]}]}, "input[0].content[0]", "5"),
        ({"input": [{"type": "function_call_output", "call_id": "c", "output": 5}]},
         "input[0].output", "a string"),
        ({"text": {"format": 5}}, "text.format", "not supported"),
        ({"reasoning": {"effort": ["low"]}}, "reasoning.effort", "not valid"),
        ({"max_output_tokens": -1}, "max_output_tokens", "greater than or equal"),
        ({"max_output_tokens": 1000}, "max_output_tokens", "model's context"),
        ({"seed": -1}, "seed", "greater than or equal"),
    ],
)  # fmt: skip
def test_refusals_name_the_field(url, extra, param, words):
    body = {"input": "x", "max_output_tokens": 2, **extra}
    assert words in _error(httpx.post(url + "/v1/responses", json=body), param)


def test_store_false_and_ignored_fields_pass(client):
    r = client.responses.create(
        model="test", input="x", max_output_tokens=2, store=False, metadata={"k": "v"},
        include=["reasoning.encrypted_content"], reasoning={"effort": "none", "summary": "auto"},
    )  # fmt: skip
    assert r.usage.output_tokens == 2 and r.metadata == {"k": "v"}


def test_logprobs_equal_chat_streamed_or_not(client):
    """``top_logprobs`` gives the chat endpoint's logprobs, in the Responses shape."""
    kwargs = {"model": "test", "max_output_tokens": 10, "temperature": 0.0}
    r = client.responses.create(input="hello", top_logprobs=3, **kwargs)
    c = client.chat.completions.create(
        model="test", messages=USER, max_tokens=10, temperature=0.0, logprobs=True,
        top_logprobs=3,
    )  # fmt: skip
    got = r.output[0].content[0].logprobs
    want = c.choices[0].logprobs.content
    assert len(got) == len(want) == r.usage.output_tokens
    for g, w in zip(got, want, strict=True):
        assert (g.token, g.logprob, g.bytes) == (w.token, w.logprob, w.bytes)
        assert [(t.token, t.logprob) for t in g.top_logprobs] == [
            (t.token, t.logprob) for t in w.top_logprobs
        ]
    events = list(client.responses.create(input="hello", top_logprobs=3, stream=True, **kwargs))
    streamed = [lp for e in events if e.type == "response.output_text.delta" for lp in e.logprobs]
    done = next(e for e in events if e.type == "response.output_text.done")
    final = events[-1].response.output[0].content[0].logprobs
    assert len(done.logprobs) == len(final) == len(got)
    assert [lp.logprob for lp in final] == [lp.logprob for lp in got]
    assert [lp.token for lp in streamed] == [lp.token for lp in got][: len(streamed)]
    only = client.responses.create(
        input="hello", include=["message.output_text.logprobs"], **kwargs
    )
    lps = only.output[0].content[0].logprobs
    assert [lp.logprob for lp in lps] == [lp.logprob for lp in got]
    assert all(lp.top_logprobs == [] for lp in lps)
    plain = client.responses.create(input="hello", **kwargs)
    assert plain.output[0].content[0].logprobs == []
