"""``mlx-gen-server`` start-up: one ``error:`` line and status 2 for what it cannot do,
130 on Ctrl-C while importing, and the CLI's model options (``--dtype`` ...)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

import mlx_gen as mg
from mlx_gen.server.main import build_parser
from tests.conftest import STORIES
from tests.test_server_load import ROOT, start_server, stop_server

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def serve(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mlx_gen.server", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=120)


def test_a_port_in_use_is_one_error_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = serve("--model", str(STORIES), "--port", str(port))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot listen on 127.0.0.1:{port}")
    assert "in use" in lines[0]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--host", "no.such.host.invalid"], "--host 'no.such.host.invalid'"),
        (["--host", "8.8.8.8"], "cannot listen on 8.8.8.8"),
        (["--api-key", ""], "--api-key '' is invalid"),
        (["--max-body-bytes", "0"], "--max-body-bytes 0 is invalid"),
    ],
)
def test_bad_start_up_options_are_one_error_line(args, says):
    r = serve("--port", "0", *args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], lines


def test_ctrl_c_during_start_up_exits_130_without_a_traceback():
    code = "import mlx_gen_launch, sys; sys.exit(mlx_gen_launch.server())"
    cmd = [sys.executable, "-c", code, "--model", str(STORIES), "--port", "0"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.3)  # still importing mlx_gen
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert (proc.returncode in (130, -signal.SIGINT), out, err) == (True, b"", b"\ninterrupted\n")


def test_the_model_options_are_the_clis():
    args = build_parser().parse_args(["--dtype", "bfloat16", "--gguf-precision", "compact"])
    assert (args.dtype, args.gguf_precision, args.dequantize) == ("bfloat16", "compact", False)
    assert build_parser().parse_args(["--dequantize"]).dequantize is True
    settings = mg.GenerationSettings(max_tokens=8, logprobs=0)
    half = mg.generate(mg.load(STORIES, dtype="float16"), "Once upon a time", settings=settings)
    full = mg.generate(mg.load(STORIES), "Once upon a time", settings=settings)
    want = [lp["raw"].logprob for lp in half.logprobs]
    assert want != [lp["raw"].logprob for lp in full.logprobs]  # float16 is seen in the values
    proc, base = start_server("--model", str(STORIES), "--model-name", "s", "--dtype", "float16")
    try:
        body = {"model": "s", "prompt": "Once upon a time", "max_tokens": 8, "logprobs": 0}
        r = httpx.post(base + "/v1/completions", json=body, timeout=60).json()
        assert r["choices"][0]["text"] == half.text
        assert r["choices"][0]["logprobs"]["token_logprobs"] == pytest.approx(want, abs=1e-6)
    finally:
        stop_server(proc)


def test_library_warnings_stay_off_the_servers_stderr():
    # Before: transformers' "Token indices sequence length is longer than ..." on stderr.
    proc, base = start_server("--model", str(STORIES), "--model-name", "s")
    prompt = "hello world " * 300  # 1,801 tokens: under the character bound, over the context
    try:
        for path in ("/v1/completions", "/tokenize"):
            body = {"model": "s", "prompt": prompt, "max_tokens": 1}
            r = httpx.post(base + path, json=body, timeout=60)
            assert r.status_code == (400 if path == "/v1/completions" else 200), r.text
    finally:
        assert stop_server(proc) == 0
    err = proc.stderr.read()
    assert "Token indices" not in err and "warn" not in err.lower(), err


def test_the_load_flags_reach_load(monkeypatch, capsys):
    import mlx_gen
    from mlx_gen.server.main import main

    seen = {}

    def fake_load(model, **options):
        seen.update(options, model=model)
        raise ValueError("not loaded here")

    monkeypatch.setattr(mlx_gen, "load", fake_load)
    argv = ["--model", "m.gguf", "--port", "0", "--dequantize", "--gguf-precision", "compact"]
    assert main([*argv, "--dtype", "bfloat16"]) == 2
    assert capsys.readouterr().err.strip().endswith("not loaded here")
    want = {"model": "m.gguf", "dtype": "bfloat16", "gguf_precision": "compact", "dequantize": True}
    assert seen == want
