"""The command line's messages: one line on stderr, naming the flag and the reason
(issue 23, items 13, 14, 16, 17)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers.utils import logging as transformers_logging

from mlx_gen.cli.main import main
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
