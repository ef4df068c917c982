"""The README stays true: its Python tour runs, and CI runs its install and test commands."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_ci_runs_the_readme_install_and_test_commands():
    setup, tests = blocks("bash")[:2]
    assert len(setup.strip().splitlines()) == len(tests.strip().splitlines()) == 1
    assert "python -m mlx_gen.generate" in setup and "python -m pytest" in tests
    install = tests.split("&& python -m pytest")[0].split(". .venv/bin/activate && ")[1]
    ci = (ROOT / ".ci" / "run").read_text()
    for part in install.split(" && "):
        assert part.strip().replace("pip install", "pip install -q") in ci
    assert "python -m pytest" in ci
    assert setup.split(" && python -m mlx_gen.generate")[0].replace("[cpu]", "[cpu,test]") in tests


@pytest.mark.slow
def test_python_tour_runs(capsys, default_model_file):
    exec(compile(blocks("python")[0], "README tour", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert "Paris" not in out[0] and out[0].endswith("stop")
    assert float(out[-1]) < 0


@pytest.mark.slow
def test_cli_examples_run(capsys, default_model_file):
    import shlex

    from mlx_gen.cli.main import main

    commands = [
        c for c in blocks("bash")[2].replace("\\\n", " ").splitlines() if c.startswith("mlx-gen ")
    ]
    assert len(commands) == 3
    for command in commands:
        assert main(shlex.split(command)[1:]) == 0, capsys.readouterr().err
        out = capsys.readouterr().out
        assert out.strip()
        if "--score" in command:
            assert json.loads(out)["total_logprob"] < 0
        if "--bad-words Paris" in command:
            assert "Paris" not in out.split("\n\n")[0]


@pytest.mark.slow
def test_agent_tool_examples_run(capsys, default_model_file):
    """The Anthropic and Responses tool-call examples run against a local server."""
    import mlx_gen
    from tests.serving import running_server

    examples = [b for b in blocks("python") if "get_weather" in b and "base_url" in b]
    assert len(examples) == 2
    with running_server(mlx_gen.load(default_model_file), name="SmolLM2-135M-Instruct.Q4_1") as url:
        for code in examples:
            exec(compile(code.replace("http://127.0.0.1:8080", url), "README", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "tool_use get_weather {'city': 'Paris'}"
    assert out[2] == "get_weather {'city': 'Paris'}"


@pytest.mark.slow
def test_server_sdk_examples_run(capsys, default_model_file):
    """The text, stream and count examples of ``/v1/messages`` and ``/v1/responses``, and
    the models / apply-template / metrics example, run against a local server and print
    what the server knows independently (the prompt's length, the schema, the card)."""
    import mlx_gen
    from mlx_gen.prompts import encode_prompt
    from mlx_gen.server.settings_map import context_length
    from tests.serving import running_server

    surfaces = ("messages.create", "responses.create", "/metrics")
    examples = [
        b for b in blocks("python") if any(s in b for s in surfaces) and "get_weather" not in b
    ]
    assert len(examples) == 3
    model = mlx_gen.load(default_model_file)
    with running_server(model, name="SmolLM2-135M-Instruct.Q4_1") as url:
        outs = []
        for code in examples:
            exec(compile(code.replace("http://127.0.0.1:8080", url), "README", "exec"), {})
            outs.append(capsys.readouterr().out.splitlines())
    hi = [{"role": "user", "content": "Hi"}]
    asked = [{"role": "system", "content": "Be brief."},
             {"role": "user", "content": "What is the capital of France?"}]  # fmt: skip
    messages, responses, card = outs
    assert f"input_tokens={len(encode_prompt(model.tokenizer, messages=asked))}," in messages[0]
    assert int(messages[-1]) == len(encode_prompt(model.tokenizer, messages=hi))
    answer, status = "\n".join(responses).split(" ResponseUsage(")[0].rsplit(" ", 1)
    assert status == "completed" and isinstance(json.loads(answer)["city"], str)
    assert responses[-1] == "response.completed" and "response.created" in responses
    assert card[0].split()[:3] == [
        "SmolLM2-135M-Instruct.Q4_1",
        str(context_length(model)),
        str(model.vocab_size),
    ]
    assert card[1].endswith(f" {len(encode_prompt(model.tokenizer, messages=hi))}")
    sent = {
        "/v1/messages": 2,
        "/v1/messages/count_tokens": 1,
        "/v1/responses": 2,
        "/v1/models": 1,
        "/apply-template": 1,
    }  # what the three examples send
    counted = {labels["endpoint"]: value for _, labels, value in ast.literal_eval(card[2])}
    assert counted == sent
