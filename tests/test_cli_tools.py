"""The command line's tools and reasoning flags: --tools, --tool-choice, --show-prompt,
--max-thinking-tokens, --chat-template-kwargs."""

from __future__ import annotations

import json

import pytest

from mlx_gen.cli.main import main
from tests.tool_models import HERMES, QWEN3, THINK_OPEN, write_tool_model

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "w",
            "parameters": {
                "type": "object",
                "properties": {"c": {"type": "string", "maxLength": 3}},
                "required": ["c"],
                "additionalProperties": False,
            },
        },
    }
]
MARKERS = ["<tool_call>", "</tool_call>", "<think>", "</think>"]


@pytest.fixture(scope="module")
def hermes(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_tools")
    folder = write_tool_model(root / "m", HERMES, MARKERS)
    (root / "tools.json").write_text(json.dumps(TOOLS))
    return folder, root / "tools.json"


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_returns_the_calls(hermes, capsys):
    folder, tools = hermes
    code, out, _ = _run(
        capsys,
        "--model",
        folder,
        "--prompt",
        "hi",
        "--chat",
        "--tools",
        tools,
        "--tool-choice",
        "required",
        "--temp",
        "1",
        "--seed",
        "1",
        "--max-tokens",
        "120",
        "--json",
    )
    doc = json.loads(out)
    assert code == 0 and doc["finish_reason"] == "stop"
    (call,) = doc["tool_calls"]
    assert call["function"]["name"] == "w" and call["type"] == "function"
    assert json.loads(call["function"]["arguments"])["c"] is not None
    assert doc["content"] == "" and doc["reasoning"] is None


def test_text_output_shows_the_call(hermes, capsys):
    folder, tools = hermes
    code, out, _ = _run(
        capsys,
        "--model",
        folder,
        "--prompt",
        "hi",
        "--chat",
        "--tools",
        tools,
        "--tool-choice",
        "w",
        "--temp",
        "1",
        "--seed",
        "2",
        "--max-tokens",
        "120",
    )
    assert code == 0 and "<tool_call>" in out
    assert any(line.startswith("tool call call_") and " w {" in line for line in out.splitlines())


def test_show_prompt_prints_the_rendered_prompt(hermes, capsys):
    folder, tools = hermes
    code, out, _ = _run(
        capsys, "--model", folder, "--prompt", "hi", "--chat", "--tools", tools, "--show-prompt"
    )
    assert code == 0 and "<tools>" in out and out.endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--tool-choice", "nope"], "'nope', which is not a declared tool"),
        (["--tool-choice", "w"], "--tool-choice needs --tools"),
        (["--tools", "/nonexistent.json"], "argument --tools: cannot read"),
    ],
)
def test_bad_tool_flags_are_named(hermes, capsys, argv, needle):
    folder, tools = hermes
    argv = [a if a != "TOOLS" else str(tools) for a in argv]
    if argv[0] == "--tool-choice" and argv[1] == "nope":
        argv = ["--tools", str(tools), *argv]
    code, _, err = _run(capsys, "--model", folder, "--prompt", "hi", "--chat", *argv)
    assert code == 2 and needle in err, err


def test_max_thinking_tokens_and_template_kwargs(tmp_path, capsys):
    folder = write_tool_model(tmp_path / "open", THINK_OPEN, MARKERS)
    code, out, _ = _run(
        capsys,
        "--model",
        folder,
        "--prompt",
        "hi",
        "--chat",
        "--temp",
        "0",
        "--max-thinking-tokens",
        "3",
        "--max-tokens",
        "8",
        "--json",
    )
    doc = json.loads(out)
    assert code == 0 and doc["tokens"][3] == "</think>" and doc["reasoning"] is not None
    folder = write_tool_model(tmp_path / "q3", QWEN3, MARKERS)
    code, out, _ = _run(
        capsys,
        "--model",
        folder,
        "--prompt",
        "hi",
        "--chat",
        "--show-prompt",
        "--chat-template-kwargs",
        '{"enable_thinking": false}',
    )
    assert code == 0 and out.endswith("<think>\n\n</think>\n\n")
