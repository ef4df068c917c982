"""Chat templates are bounded in CPU, memory and time (issue 23, item 7).

Each payload is a model folder's chat template that, unbounded, runs for minutes or
takes gigabytes inside one C call; each must end within seconds with one error naming
the template's file and the bound, through the API and through ``--chat``.
"""

from __future__ import annotations

import time

import pytest

import mlx_gen as mg
from mlx_gen.loading import template_sandbox
from mlx_gen.loading.chat_template import render_chat_template
from tests.test_gguf import byte_level_metadata, tiny_config, write_model
from tests.test_model_folder_code import CHAT, copy_stories, edit_json, one_error_line, run_cli

PAYLOADS = {
    "power": ("{{ (7**999999999) % 10 }}", "7 ** 999999999 would have about"),
    "repeat": ("{{ 'ab' * 200000000 }}", "a repeated string or list would have 400,000,000"),
    "list repeat": ("{{ ([1] * 100000000) | length }}", "a repeated string or list"),
    "format width": ("{{ '%999999999d' | format(1) }}", "the format width 999999999"),
    "percent width": ("{{ '%999999999d' % 1 }}", "the format width 999999999"),
    "padding": ("{{ 'a'.center(999999999) }}", "the argument 999,999,999 of center()"),
    "int product": (
        "{% set ns = namespace(x=7**500) %}{% for i in range(40) %}"
        "{% set ns.x = ns.x * ns.x %}{% endfor %}{{ ns.x % 10 }}",
        "an integer product would have",
    ),
    "doubling": (
        "{% set ns = namespace(s='ab') %}{% for i in range(40) %}"
        "{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s | length }}",
        "a joined string or list would have",
    ),
    "nested loops": (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "rendering took longer than the limit of",
    ),
    "long output": (
        "{% for i in range(100000) %}{% for j in range(100000) %}{{ 'x' * 1000 }}"
        "{% endfor %}{% endfor %}",
        "the rendered text is longer than the limit of",
    ),
}


@pytest.fixture(autouse=True)
def short_budget(monkeypatch):
    monkeypatch.setattr(template_sandbox, "TIME_BUDGET_S", 1.0)


@pytest.mark.parametrize("name", list(PAYLOADS))
def test_each_payload_ends_quickly_in_the_bounded_sandbox(name):
    template, expected = PAYLOADS[name]
    start = time.monotonic()
    with pytest.raises(ValueError) as err:
        render_chat_template(template, CHAT, source="t.json")
    assert time.monotonic() - start < 4.0
    assert str(err.value).startswith("t.json: the chat template went past a limit (")
    assert expected in str(err.value)


@pytest.mark.parametrize("sentencepiece_only", [False, True])
@pytest.mark.parametrize("name", ["power", "repeat", "nested loops"])
def test_each_payload_is_one_error_through_generate(tmp_path, name, sentencepiece_only):
    template, expected = PAYLOADS[name]
    model = copy_stories(tmp_path / "m", sentencepiece_only=sentencepiece_only)
    edit_json(model / "tokenizer_config.json", chat_template=template)
    loaded = mg.load(model)
    start = time.monotonic()
    with pytest.raises(ValueError) as err:
        mg.generate(loaded, messages=CHAT, settings=mg.GenerationSettings(max_tokens=1))
    assert time.monotonic() - start < 4.0
    assert str(err.value).startswith(f"{model / 'tokenizer_config.json'}: the chat template went")
    assert expected in str(err.value)


@pytest.mark.parametrize("name", ["power", "repeat"])
def test_each_payload_is_one_error_line_through_the_cli(tmp_path, name):
    template, expected = PAYLOADS[name]
    model = copy_stories(tmp_path / "m")
    edit_json(model / "tokenizer_config.json", chat_template=template)
    start = time.monotonic()
    done = run_cli("--model", str(model), "--chat", "--prompt", "Hi", "--max-tokens", "1")
    assert time.monotonic() - start < 60  # the import and load included
    assert done.returncode == 2
    line = one_error_line(done.stderr)
    assert "tokenizer_config.json: the chat template went past a limit" in line
    assert expected in line


def test_the_time_budget_of_the_cli_is_the_documented_one(tmp_path):
    model = copy_stories(tmp_path / "m")
    edit_json(model / "tokenizer_config.json", chat_template=PAYLOADS["nested loops"][0])
    start = time.monotonic()
    done = run_cli("--model", str(model), "--chat", "--prompt", "Hi", "--max-tokens", "1")
    assert time.monotonic() - start < 60
    assert done.returncode == 2
    assert "took longer than the limit of 5 seconds" in one_error_line(done.stderr)


def test_a_large_legitimate_chat_renders_within_the_bounds():
    template = "{% for m in messages %}<{{ m.role }}>{{ m.content | trim }}{% endfor %}"
    content = "word " * 2_000_000  # 10 MB
    rendered = render_chat_template(template, [{"role": "user", "content": content}], source="t")
    assert rendered == "<user>" + content.strip()
    assert render_chat_template("{{ 2 ** 64 }} {{ '-' * 3 }} {{ '%5d' % 7 }}", [], source="t") == (
        "18446744073709551616 ---     7"
    )


def test_a_gguf_template_payload_is_one_error(tmp_path):
    path = tmp_path / "bomb.gguf"
    metadata = {**byte_level_metadata(), "tokenizer.chat_template": PAYLOADS["power"][0]}
    write_model(path, tiny_config(), tokenizer=metadata)
    start = time.monotonic()
    with pytest.raises(ValueError) as err:
        mg.generate(mg.load(path), messages=CHAT, settings=mg.GenerationSettings(max_tokens=1))
    assert time.monotonic() - start < 10.0
    assert str(err.value).startswith(f"{path} (tokenizer.chat_template): the chat template went")


@pytest.mark.parametrize("name", ["power", "repeat", "nested loops"])
def test_each_payload_is_a_400_from_the_server_and_health_answers_meanwhile(tmp_path, name):
    from tests.serving import running_server
    from tests.test_server_limits import _health_while

    template, expected = PAYLOADS[name]
    model = copy_stories(tmp_path / "m")
    edit_json(model / "tokenizer_config.json", chat_template=template)
    body = {"model": "test", "messages": CHAT, "max_tokens": 1}
    with running_server(mg.load(model), name="test") as base:
        start = time.monotonic()
        r, *latencies = _health_while(base, "/v1/chat/completions", body)
        assert time.monotonic() - start < 4.0  # the 1 s budget of the fixture, not a hang
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages", r.text
    assert "tokenizer_config.json: the chat template went past a limit" in r.text
    assert expected in r.json()["error"]["message"]
    assert max(latencies) < 0.5  # rendered off the event loop
