"""The command line on bad input: one ``error:`` line and status 2, never a traceback.

Each case was a traceback, a hang or a silent wrong result before (issue 10): invalid
UTF-8 in argv and files, Ctrl-C during start-up, a closed or broken stdout, an endless
prompt file, malformed JSONL lines, argparse errors that did not name the value, an
existing ``--output`` refused only after the batch ran, ``--json`` losing its output,
and control characters from the model reaching the terminal.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import mlx_gen as mg
from mlx_gen.cli.input_text import MAX_INPUT_BYTES
from mlx_gen.cli.main import main
from tests.checkpoints import VOCAB_SIZE, llama_config, write_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bad") / "tiny"
    write_checkpoint(folder, llama_config())
    return folder


@pytest.fixture
def run(tiny, capsys):
    def run(*args: str) -> tuple[int, str, str]:
        code = main(["--model", str(tiny), *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def one_error(code: int, out: str, err: str, *named: str) -> None:
    assert (code, out) == (2, ""), err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for name in named:
        assert name in err, err


def launch(*args: str, **kwargs) -> subprocess.Popen:
    """``mlx-gen`` (the console script's entry) in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "mlx_gen_launch", *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


# --- invalid UTF-8 ---


@pytest.mark.parametrize(
    "args",
    [
        ["--prompt", "ab\udcff"],
        ["--prompt", "hi", "--bad-words", "x\udcc3"],
        ["--prompt", "hi", "--logit-bias-text", "x\udcff:2"],
        ["--prompt", "hi", "--score", "\udcfe"],
        ["--prompt", "hi", "--stop", "\udcfe"],
        ["--prompt", "hi", "--chat", "--system", "\udcfe"],
    ],
    ids=["prompt", "bad-words", "logit-bias-text", "score", "stop", "system"],
)
def test_invalid_utf8_in_argv_names_the_flag(run, args):
    flag = [a for a in args if a.startswith("--")][-1]
    one_error(*run(*args), f"argument {flag}: not valid UTF-8 (byte 0x")


def test_invalid_utf8_bytes_on_a_real_command_line_and_stdin(tiny, tmp_path):
    proc = launch("--model", str(tiny), "--prompt", os.fsdecode(b"caf\xe9"))
    out, err = proc.communicate(timeout=120)
    one_error(proc.returncode, out.decode(), err.decode(), "--prompt", "byte 0xe9 at character 3")
    proc = launch("--model", str(tiny), "--prompt-file", "-", stdin=subprocess.PIPE)
    out, err = proc.communicate(b"ok \xff\xfe", timeout=120)
    one_error(proc.returncode, out.decode(), err.decode(), "--prompt-file", "standard input")
    assert "byte 0xff at offset 3" in err.decode()


def test_invalid_utf8_in_a_prompt_file_names_the_flag_and_path(run, tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"caf\xe9")
    one_error(*run("--prompt-file", str(path)), "--prompt-file", str(path), "not valid UTF-8")
    one_error(*run("--prompt-file", str(path), "--batch-size", "2"), "--prompt-file", str(path))


def test_an_endless_prompt_file_is_capped(run):
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero")
    start = time.perf_counter()
    code, out, err = run("--prompt-file", "/dev/zero")
    one_error(code, out, err, "'/dev/zero' is larger than 32 MiB")
    assert MAX_INPUT_BYTES == 32 * 2**20 and time.perf_counter() - start < 30


# --- Ctrl-C, closed and broken stdout ---


@pytest.mark.parametrize("delay", [0.3, 1.5])
def test_ctrl_c_during_start_up_exits_130_without_a_traceback(tiny, delay):
    # 0.3 s: still importing mlx_gen; 1.5 s: importing, loading or waiting on stdin.
    proc = launch("--model", str(tiny), "--prompt-file", "-", stdin=subprocess.PIPE)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    # 130, or (rarely, under load, when the signal lands as an extension module finishes
    # initialising) death by SIGINT itself: a shell reports both as status 130.
    assert (proc.returncode in (130, -signal.SIGINT), out, err) == (True, b"", b"\ninterrupted\n")


def test_ctrl_c_during_mlx_gen_convert_start_up_exits_130(tmp_path):
    # The mlx-gen-convert console script's entry, interrupted while importing mlx_gen.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = "import mlx_gen_launch, sys; sys.exit(mlx_gen_launch.convert())"
    cmd = [sys.executable, "-c", code, "--hf-path", str(tmp_path), "--mlx-path", "x"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert (proc.returncode, out, err) == (130, b"", b"\ninterrupted\n")


def test_a_broken_pipe_exits_quietly(tiny):
    proc = launch("--model", str(tiny), "--prompt", "hello", "--max-tokens", "50", "--ignore-eos")
    proc.stdout.close()  # the reader is gone before anything is written (`| head -c 0`)
    err = proc.stderr.read()
    proc.wait(timeout=120)
    assert (proc.returncode, err) == (141, b"")


def test_a_closed_stdout_is_one_error(tiny):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = f'exec "{sys.executable}" -m mlx_gen_launch --model "{tiny}" --prompt hi >&-'
    proc = subprocess.run(["sh", "-c", cmd], env=env, capture_output=True, timeout=120)
    assert proc.returncode == 2
    assert (
        proc.stderr == b"error: standard output is closed: there is nowhere to write the output\n"
    )


# --- argparse values, --output, --json ---


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--logit-bias", "-1:2"], "argument --logit-bias: '-1:2' is invalid"),
        (["--frequency-penalty", "-inf"], "argument --frequency-penalty: '-inf' is not"),
        (["--max-tokens", "-5"], "argument --max-tokens: '-5' is not an int in 0..2147483647"),
        (["--max-tokens", "99999999999"], "argument --max-tokens: '99999999999' is not an int"),
        (["--seed", "-1"], "argument --seed: '-1' is not an int in [0, 2**64)"),
        (["--suppress-tokens", "-3"], "argument --suppress-tokens: '-3' is not a token id"),
    ],
)
def test_negative_values_are_named(run, args, named):
    one_error(*run("--prompt", "hi", *args), named)


def test_a_dash_led_prompt_is_a_value(run):
    code, out, err = run("--prompt", "-hello", "--max-tokens", "2", "--json")
    assert code == 0 and json.loads(out)["usage"]["completion_tokens"] == 2


def test_an_existing_output_is_refused_before_the_batch_runs(run, tmp_path, monkeypatch):
    prompts = tmp_path / "p.txt"
    prompts.write_text("one\ntwo\n")
    out = tmp_path / "out.jsonl"
    out.write_text("keep me")

    def never(*args, **kwargs):
        raise AssertionError("the batch ran")

    monkeypatch.setattr(mg, "load", never)
    code, stdout, err = run(
        "--prompt-file", str(prompts), "--batch-size", "2", "--output", str(out)
    )
    one_error(code, stdout, err, f"argument --output: '{out}' exists")
    assert "--force" not in err and out.read_text() == "keep me"
    missing = tmp_path / "no" / "out.jsonl"
    one_error(*run("--prompt-file", str(prompts), "--batch-size", "2", "--output", str(missing)))


def test_json_on_ctrl_c_prints_what_was_generated(run, monkeypatch):
    real = mg.stream_generate

    def interrupted(*args, **kwargs):
        stream = real(*args, **kwargs)
        yield next(stream)
        yield next(stream)
        raise KeyboardInterrupt

    monkeypatch.setattr(mg, "stream_generate", interrupted)
    code, out, err = run("--prompt", "hi", "--max-tokens", "5", "--ignore-eos", "--json")
    doc = json.loads(out)
    assert code == 130 and err == "\ninterrupted\n"
    assert doc["finish_reason"] == "interrupted" and len(doc["token_ids"]) == 2


def test_json_when_every_token_is_banned(run):
    every = ",".join(str(i) for i in range(VOCAB_SIZE))
    # Exit 1 and one stderr line naming no_allowed_token (before: 0, silently).
    note = (
        "no_allowed_token: generation stopped after 0 token(s): no token was allowed at the "
        "next step (every id banned by --suppress-tokens, --begin-suppress-tokens, "
        "--bad-words or a -inf --logit-bias, or NaN logits)\n"
    )
    code, out, err = run("--prompt", "hi", "--suppress-tokens", every, "--json", "--logprobs", "2")
    assert (code, err) == (1, note)
    doc = json.loads(out)
    assert (doc["token_ids"], doc["finish_reason"]) == ([], "no_allowed_token")
    code, out, err = run("--prompt", "hi", "--suppress-tokens", every, "--logprobs", "1",
                         "--stream-logprobs")  # fmt: skip
    assert (code, out, err) == (1, "\n", note)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _chunks_with(text: str):
    def fake(*args, **kwargs):
        yield mg.GenerationChunk(text, 5)
        yield mg.GenerationChunk("", 6, finish_reason="length")

    return fake


def test_control_characters_are_escaped_on_a_terminal_only(tiny, monkeypatch, capsys):
    monkeypatch.setattr(mg, "stream_generate", _chunks_with("a\x1b]0;pwned\x07b\r\x9b2J\tc\n"))
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    assert main(["--model", str(tiny), "--prompt", "hi"]) == 0
    assert terminal.getvalue() == "a\\x1b]0;pwned\\x07b\\x0d\\x9b2J\tc\n\n"
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    assert main(["--model", str(tiny), "--prompt", "hi", "--json"]) == 0
    assert json.loads(terminal.getvalue())["text"] == "a\x1b]0;pwned\x07b\r\x9b2J\tc\n"
    assert "\x9b" not in terminal.getvalue() and "\x1b" not in terminal.getvalue()
    monkeypatch.undo()
    monkeypatch.setattr(mg, "stream_generate", _chunks_with("a\x1bb"))
    assert main(["--model", str(tiny), "--prompt", "hi"]) == 0
    assert capsys.readouterr().out == "a\x1bb\n"  # a pipe or file gets the raw text


# --- batch JSONL ---


@pytest.mark.parametrize(
    ("line", "named"),
    [
        ({"prompt": "a", "max_tokens": 1e999}, "max_tokens=inf is invalid (expected an int"),
        ({"prompt": "a", "max_tokens": 2.5}, "max_tokens=2.5 is invalid"),
        ({"prompt": "a", "max_tokens": True}, "max_tokens=True is invalid"),
        ({"prompt": "a", "max_tokens": "3"}, "max_tokens='3' is invalid"),
        ({"prompt": "a", "max_tokens": 2**40}, "at most 2147483647"),
        ({"prompt": "a", "seed": True}, "seed=True is invalid"),
        ({"prompt": "a", "ignore_eos": "yes"}, "ignore_eos='yes' is invalid"),
        ({"messages": [{"role": "user", "content": {"x": 1}}]}, "messages[0]['content'] is a dict"),
        ({"messages": [{"content": "hi"}]}, "messages[0] has no 'role'"),
        ({"messages": ["hi"]}, "messages[0] is a str"),
        ({"prompt": [1, 99999]}, "prompt[1]=99999 is outside the vocabulary (size 320"),
        ({"prompt": [1, -5]}, "prompt[1]=-5 is outside the vocabulary"),
        ({"prompt": [1, 2.5]}, "prompt[1]=2.5 is not a token id"),
        ({"prompt": "a " * 300}, "has 301 tokens, but the model's context is 256 tokens"),
        ({"prompt": "a", "suppress_tokens": 2.5}, "suppress_tokens=2.5 is invalid"),
        ({"prompt": "a", "stop": [1]}, "stop=[1] is invalid"),
        ({"prompt": "a", "temperature": 10**30}, "temperature=" + str(10**30) + " is invalid"),
    ],
)
def test_a_bad_jsonl_line_is_named(run, tmp_path, line, named):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "fine"}) + "\n" + json.dumps(line) + "\n")
    code, out, err = run("--prompt-file", str(path), "--batch-size", "2", "--max-tokens", "2")
    one_error(code, out, err, f"{path}:2: ", named)


def test_deeply_nested_json_is_named(run, tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text('{"prompt": "a"}\n' + "[" * 100_000 + "\n")
    code, out, err = run("--prompt-file", str(path), "--batch-size", "2")
    one_error(code, out, err, f"{path}:2: JSON nested too deeply")


def test_bad_messages_through_the_api_are_named(tmp_path):
    model = mg.load(_tiny_dir(tmp_path))
    with pytest.raises(ValueError, match=r"messages\[1\]\['content'\] is a dict"):
        mg.generate(
            model, messages=[{"role": "user", "content": "a"}, {"role": "u", "content": {}}]
        )
    with pytest.raises(ValueError, match=r"prompts\[0\]: messages\[0\] has no 'role'"):
        mg.generate_batch(model, [[{"content": "a"}]])


def _tiny_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "api"
    write_checkpoint(folder, llama_config())
    return folder


def test_batch_results_on_a_terminal_escape_c1_characters(monkeypatch):
    from mlx_gen.cli.batch_io import write_jsonl_results

    result = mg.GenerationResult("a\x9bb\x1b", [5], ["x"], [{}], "length", None, None)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    write_jsonl_results("-", [result], decode=str)
    assert "\x9b" not in terminal.getvalue() and "\x1b" not in terminal.getvalue()
    assert json.loads(terminal.getvalue())["text"] == "a\x9bb\x1b"


def test_the_console_script_entry_imports_nothing_heavy():
    # Its import must be instant, or Ctrl-C could land before its try: block.
    code = "import sys, mlx_gen_launch; print(sorted(m for m in sys.modules if m[:3] == 'mlx'))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "['mlx_gen_launch']", out.stderr
