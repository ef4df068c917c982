"""Speculation in the server: the ``speculative`` field, the server's default, the flags.

Through HTTP on stories260K: a request that drafts (counted in ``/metrics``) returns
exactly the tokens and logprobs of the single plain run, on completions, chat (with a
JSON schema) and Anthropic messages; concurrent requests draft only while alone and stay
exact; ``false`` turns the default off; every bad value is a 400 naming ``speculative``;
bad flags end the server with one ``error:`` line and exit status 2.
"""

from __future__ import annotations

import concurrent.futures
import json
import shutil

import httpx
import jsonschema
import numpy as np
import openai
import pytest

import mlx_gen as mg
from mlx_gen.server.main import main
from mlx_gen.server.speculation import ServerSpeculation
from tests.checkpoints import CHATML
from tests.conftest import STORIES
from tests.serving import running_server
from tests.test_control_matrix import PROMPT, SCHEMA
from tests.test_server_metrics import delta, scrape
from tests.test_server_tools import MARKERS as TOOL_MARKERS
from tests.test_server_tools import SCHEMAS as TOOL_SCHEMAS
from tests.test_server_tools import TOOLS as TOOL_DEFS
from tests.test_server_tools import USER as TOOL_USER
from tests.test_speculative import noisy_draft  # noqa: F401 (fixture)
from tests.tool_models import HERMES, write_tool_model

pytestmark = pytest.mark.skipif(
    not (STORIES / "config.json").exists(), reason=f"{STORIES} is absent"
)
DRAFTED = "mlx_gen_spec_draft_tokens_total"


@pytest.fixture(scope="module")
def story(tmp_path_factory) -> mg.LoadedModel:
    """stories260K with a chat template (ChatML), for the chat and messages endpoints."""
    folder = tmp_path_factory.mktemp("story") / "stories260K"
    shutil.copytree(STORIES, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": CHATML}))
    return mg.load(folder)


@pytest.fixture(scope="module")
def server(story, noisy_draft):  # noqa: F811
    lookup = mg.PromptLookup(num_draft=4, min_ngram=1, measure_cost=False)
    speculation = ServerSpeculation(default=lookup, draft_model=noisy_draft, measure_cost=False)
    with running_server(story, name="story", strict=True, speculation=speculation) as url:
        yield url


def complete(url: str, **fields) -> dict:
    body = {"model": "story", "prompt": PROMPT, "max_tokens": 30, "temperature": 0.0,
            "return_token_ids": True, "logprobs": 2, **fields}  # fmt: skip
    reply = httpx.post(url + "/v1/completions", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    return reply.json()["choices"][0]


def plain(story, **settings) -> mg.GenerationResult:
    base = {"max_tokens": 30, "temperature": 0.0, "logprobs": 2, **settings}
    return mg.generate(story, PROMPT, settings=mg.GenerationSettings(**base))


def assert_plain(choice: dict, ref: mg.GenerationResult) -> None:
    assert choice["token_ids"] == ref.token_ids and choice["text"] == ref.text
    raw = [step["raw"].logprob for step in ref.logprobs]
    np.testing.assert_allclose(choice["logprobs"]["token_logprobs"], raw, atol=1e-4)


@pytest.mark.parametrize(
    "field", [None, {"prompt_lookup": 3}, {"draft": 2}], ids=["default", "lookup", "draft"]
)
def test_a_drafting_request_returns_the_plain_output(server, story, field):
    before = scrape(server)
    choice = complete(server, **({} if field is None else {"speculative": field}))
    assert delta(before, scrape(server), DRAFTED) > 0  # it really drafted
    assert_plain(choice, plain(story))


def test_false_turns_the_default_off(server, story):
    before = scrape(server)
    choice = complete(server, speculative=False)
    assert delta(before, scrape(server), DRAFTED) == 0
    assert_plain(choice, plain(story))


def test_chat_with_a_schema_and_anthropic_messages_draft_exactly(server, story):
    messages = [{"role": "user", "content": PROMPT}]
    body = {"model": "story", "messages": messages, "max_tokens": 30, "temperature": 0.0,
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "said", "schema": SCHEMA}},
            "speculative": {"prompt_lookup": 4}}  # fmt: skip
    before = scrape(server)
    spec = httpx.post(server + "/v1/chat/completions", json=body, timeout=120).json()
    assert delta(before, scrape(server), DRAFTED) > 0, spec
    off = httpx.post(server + "/v1/chat/completions", json={**body, "speculative": False},
                     timeout=120).json()  # fmt: skip
    assert spec["choices"][0]["message"] == off["choices"][0]["message"]
    assert spec["choices"][0]["message"]["content"].startswith('{ "said" : "')  # the schema's
    anthropic = {"model": "story", "max_tokens": 30, "temperature": 0.0, "messages": messages}
    replies = [
        httpx.post(server + "/v1/messages", json={**anthropic, "speculative": s}, timeout=120)
        for s in ({"draft": 3}, False)
    ]
    assert [r.status_code for r in replies] == [200, 200], replies[0].text
    assert replies[0].json()["content"] == replies[1].json()["content"]


def test_concurrent_requests_stay_exact(server, story):
    prompts = [PROMPT, "Once upon a time", "Lily went", PROMPT]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        choices = list(pool.map(lambda p: complete(server, prompt=p, max_tokens=20), prompts))
    for prompt, choice in zip(prompts, choices, strict=True):
        ref = mg.generate(story, prompt, settings=mg.GenerationSettings(max_tokens=20))
        assert choice["token_ids"] == ref.token_ids


@pytest.mark.parametrize(
    "value",
    [{"prompt_lookup": 0}, {"prompt_lookup": 65}, {"prompt_lookup": 2, "draft": 2}, {},
     {"prompt_lookup": "4"}, {"lookup": 4}, True, 4],
)  # fmt: skip
def test_bad_values_are_a_400_naming_the_field(server, value):
    body = {"model": "story", "prompt": PROMPT, "max_tokens": 3, "speculative": value}
    reply = httpx.post(server + "/v1/completions", json=body, timeout=60)
    assert reply.status_code == 400 and "speculative" in reply.text, reply.text


def test_a_draft_without_a_draft_model_is_refused_by_name(story):
    with running_server(story, name="story") as url:
        body = {"model": "story", "prompt": PROMPT, "max_tokens": 3, "speculative": {"draft": 2}}
        reply = httpx.post(url + "/v1/completions", json=body, timeout=60)
        assert reply.status_code == 400 and "--draft-model" in reply.text
        body["speculative"] = {"prompt_lookup": 2}  # lookup needs nothing more
        assert httpx.post(url + "/v1/completions", json=body, timeout=60).status_code == 200


@pytest.mark.parametrize(
    "flags, message",
    [(["--prompt-lookup", "0"], "--prompt-lookup 0 is invalid (expected 1..64)"),
     (["--num-draft", "3"], "--num-draft needs --draft-model"),
     (["--draft-model", "/nonexistent/draft"], "--draft-model:")],
)  # fmt: skip
def test_bad_flags_exit_2_with_one_error_line(capsys, flags, message):
    assert main(["--model", str(STORIES), "--port", "0", *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_tool_calls_stay_valid_by_construction_while_drafting(tmp_path):
    """A tiny random model can only call tools validly if the grammar holds in the rounds."""
    hermes = mg.load(write_tool_model(tmp_path / "h", HERMES, TOOL_MARKERS))
    with running_server(hermes, speculation=ServerSpeculation(measure_cost=False)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)

        def ask(spec, temperature, seed=3):
            return client.chat.completions.create(
                model="test", messages=TOOL_USER, tools=TOOL_DEFS, tool_choice="required",
                temperature=temperature, seed=seed, max_tokens=160, parallel_tool_calls=False,
                extra_body={"speculative": spec, "return_token_ids": True},
            ).choices[0]  # fmt: skip

        before = scrape(url)
        greedy = [ask(spec, 0.0) for spec in ({"prompt_lookup": 4}, False)]
        assert greedy[0].token_ids == greedy[1].token_ids  # exact, whatever it says
        completed = 0
        for seed in range(6):  # sampled: every call that completes is valid
            choice = ask({"prompt_lookup": 4}, 1.0, seed)
            for call in choice.message.tool_calls or []:
                schema = TOOL_SCHEMAS[call.function.name]
                jsonschema.validate(json.loads(call.function.arguments), schema)
                completed += 1
        assert completed > 0
        assert delta(before, scrape(url), DRAFTED) > 0  # the rounds really ran


def test_ranks_draft_with_prompt_lookup_only_and_sliding_windows_are_refused(story, monkeypatch):
    """Under ranks: prompt lookup (the flag and the request field), always drafting
    (``measure_cost=False``: no rank times its rounds); a draft model refused by name."""
    import argparse

    import mlx_gen.batch.speculate as speculate
    from mlx_gen.server.errors import ApiError
    from mlx_gen.server.speculation import SpeculativeRequest, open_speculation

    flags = argparse.Namespace(prompt_lookup=None, draft_model=None, num_draft=None)
    ranked = open_speculation(story, flags, ranked=True)
    assert ranked.drafter(None) is None and ranked.drafter(False) is None
    asked = ranked.drafter(SpeculativeRequest(prompt_lookup=2))
    assert asked == mg.PromptLookup(num_draft=2, measure_cost=False)
    refused = r'"draft": 2\} is not available: the distributed server drafts with prompt lookup'
    with pytest.raises(ApiError, match=refused + r" only \(each rank would run its own draft"):
        ranked.drafter(SpeculativeRequest(draft=2))
    lookup = open_speculation(story, argparse.Namespace(**{**vars(flags), "prompt_lookup": 3}),
                              ranked=True)  # fmt: skip
    assert lookup.drafter(None) == mg.PromptLookup(num_draft=3, measure_cost=False)
    assert lookup.drafter(False) is None
    with pytest.raises(ValueError, match="--draft-model: the distributed server drafts with"):
        open_speculation(story, argparse.Namespace(**{**vars(flags), "draft_model": "x"}),
                         ranked=True)  # fmt: skip
    from mlx_lm.models.cache import RotatingKVCache

    monkeypatch.setattr(speculate, "make_prompt_cache", lambda m: [RotatingKVCache(8)])
    windowed = open_speculation(story, flags, ranked=False)
    with pytest.raises(ApiError, match="cannot be trimmed"):
        windowed.drafter(SpeculativeRequest(prompt_lookup=2))
    with pytest.raises(ValueError, match="cannot be trimmed"):
        open_speculation(story, argparse.Namespace(**{**vars(flags), "prompt_lookup": 3}),
                         ranked=False)  # fmt: skip


def test_metrics_count_the_drafted_and_accepted_tokens_of_the_batch_engine(server, story):
    """``/metrics``' speculative counters move by exactly the drafted and accepted tokens
    of ``generate_batch`` for the same prompt and drafter, and those account for every
    token: plain steps + one per verification round + the accepted drafts."""
    lookup = mg.PromptLookup(num_draft=4, min_ngram=1, measure_cost=False)  # the default
    settings = mg.GenerationSettings(max_tokens=30, temperature=0.0, speculative=lookup)
    [ref] = mg.generate_batch(story, [PROMPT], settings=settings)
    stats = ref.stats.speculation
    assert stats.plain_tokens + stats.rounds + stats.accepted == len(ref.token_ids) == 30
    assert 0 < stats.accepted < stats.drafted
    before = scrape(server)
    choice = complete(server, logprobs=None)
    after = scrape(server)
    assert choice["token_ids"] == ref.token_ids
    assert delta(before, after, DRAFTED) == stats.drafted
    assert delta(before, after, "mlx_gen_spec_accepted_tokens_total") == stats.accepted
