"""The command line's messages: one line on stderr, naming the flag and the reason
(issue 23, items 13, 14, 16, 17)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from transformers.utils import logging as transformers_logging

import mlx_gen as mg
from mlx_gen.cli.main import main
from tests.checkpoints import llama_config, write_checkpoint
from tests.conftest import STORIES

ROOT = Path(__file__).resolve().parents[1]


def run_module(module: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", module, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.skipif(not (STORIES / "config.json").exists(), reason="no stories260K")
def test_a_too_long_prompt_is_one_line_without_the_transformers_warning(tmp_path):
    # Before: transformers' "Token indices sequence length is longer than ..." came first.
    prompt = tmp_path / "long.txt"
    prompt.write_text("hello world " * 1000)
    done = run_module(
        "mlx_gen.generate", "--model", str(STORIES), "--prompt-file", str(prompt),
        "--max-tokens", "1",
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: the prompt has 6001 tokens, but the model's context")


@pytest.mark.skipif(not (STORIES / "config.json").exists(), reason="no stories260K")
def test_main_in_process_restores_the_callers_library_logging(capsys):
    transformers_logging.set_verbosity_warning()
    main(["--model", str(STORIES), "--prompt", "hello " * 600, "--max-tokens", "1"])
    assert capsys.readouterr().err.count("\n") == 1
    assert transformers_logging.get_verbosity() == transformers_logging.WARNING


# --- mlx-gen-launch (items 16 and 17) ---

LAUNCHER = "from mlx_gen_launch import launch; raise SystemExit(launch())"


def _launcher(*args: str) -> subprocess.Popen:
    """The ``mlx-gen-launch`` console script's entry in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-c", LAUNCHER, *args]
    return subprocess.Popen(
        cmd, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip


def test_launch_with_no_command_after_the_dashes_is_one_error_line():
    # Before: exit 0, silently (mlx.launch ran nothing).
    proc = _launcher("-n", "2", "--backend", "ring", "--")
    out, err = proc.communicate(timeout=120)
    assert (proc.returncode, out) == (2, b"")
    assert err.decode().startswith("error: mlx-gen-launch: no command after '--'")
    assert err.count(b"\n") == 1


@pytest.mark.parametrize("delay", [0.3, 6.0])
def test_ctrl_c_to_mlx_gen_launch_exits_130_without_a_traceback(delay):
    # 0.3 s: importing; 6 s: the ranks run. Before: a traceback (and status 130 by SIGINT).
    sleeper = "import time; time.sleep(120)"
    proc = _launcher("-n", "2", "--backend", "ring", "--", sys.executable, "-c", sleeper)
    time.sleep(delay)
    start = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert time.monotonic() - start < 30  # the ranks were stopped, not waited for
    assert (proc.returncode in (130, -signal.SIGINT), out, err) == (True, b"", b"\ninterrupted\n")


def test_an_indivisible_head_count_is_printed_once(tmp_path):
    # Before: once per rank (3 lines for -n 3 with 4 heads).
    folder = tmp_path / "tiny"
    write_checkpoint(folder, llama_config())  # 4 heads, 2 KV heads
    proc = _launcher(
        "-n", "3", "--backend", "ring", "-p", str(30000 + os.getpid() % 20000), "--",
        sys.executable, "-m", "mlx_gen.generate", "--model", str(folder), "--prompt", "a",
    )  # fmt: skip
    out, err = proc.communicate(timeout=240)
    errors = [line for line in err.decode().splitlines() if line.startswith("error:")]
    assert proc.returncode == 2, err
    assert errors == [
        f"error: {folder}: num_attention_heads=4 cannot be split across 3 ranks "
        "(tensor parallelism needs it divisible by the number of ranks)"
    ], err


# --- messages that name the flag and the reason (item 17) ---


@pytest.mark.skipif(not (STORIES / "config.json").exists(), reason="no stories260K")
@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["--score", " "],
            "error: argument --score: ' ' encodes to no token (whitespace alone may), so "
            "there is nothing to score",
        ),
        (
            ["--bad-words", "   "],
            "error: argument --bad-words: BadWords.from_strings: word '   ' is invalid: "
            "expected text with a non-space character (a blank word bans nothing)",
        ),
    ],
)
def test_blank_score_and_bad_words_name_the_flag_and_why(capsys, args, line):
    # Before: "score() needs a non-empty prompt and continuation"; no flag named.
    code = main(["--model", str(STORIES), "--prompt", "Hi", *args])
    captured = capsys.readouterr()
    assert (code, captured.out, captured.err) == (2, "", line + "\n")


@pytest.mark.skipif(not (STORIES / "config.json").exists(), reason="no stories260K")
def test_a_prompt_of_the_wrong_type_is_named():
    model = mg.load(STORIES)
    # Before: TypeError: 'int' object is not iterable.
    with pytest.raises(ValueError, match=r"^prompt=12345 is an int: expected text \(a str\) or"):
        mg.generate(model, 12345)
    with pytest.raises(ValueError, match=r"^score\(\): continuation=' ' encodes to no token"):
        mg.score(model, "Hi", " ")
    with pytest.raises(ValueError, match=r"^continuation=7 is an int: expected text"):
        mg.score(model, "Hi", 7)
