"""Launch ``python -m mlx_gen.server`` on 2 ranks (ring, 127.0.0.1) for tests, and clean up.

Every process of one launch carries the launch's unique ``--port`` on its command line,
so :func:`rank_pids` finds them all and :func:`stop` can prove none is left running.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.serving import free_port
from tests.test_distributed import _free_port

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 120


@dataclass
class Launch:
    """A running 2-rank server: its launcher process, base URL and output so far."""

    proc: subprocess.Popen
    port: int
    url: str = ""
    follower_pid: int = 0
    lines: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _pump(stream, sink: list[str]) -> None:
    for line in stream:
        sink.append(line)


def rank_pids(port: int) -> list[int]:
    """Every live process (not zombie) whose command line holds ``--port PORT``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and b"mlx_gen.server" in args and str(port).encode() in args:
            found.append(int(entry.name))
    return found


def start(model: str, *extra: str) -> Launch:
    """Start the launcher; return once rank 0 is ready (raises with its stderr if not)."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "mlx_gen.cli.launch", "-n", "2", "--backend", "ring"]
    command += ["-p", str(_free_port()), "--", sys.executable, "-m", "mlx_gen.server"]
    command += ["--model", model, "--port", str(port), *extra]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        text=True, env=env, cwd=ROOT,
    )  # fmt: skip
    launch = Launch(proc, port)
    threading.Thread(target=_pump, args=(proc.stdout, launch.lines), daemon=True).start()
    threading.Thread(target=_pump, args=(proc.stderr, launch.errors), daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        text = "".join(launch.lines)
        ready = re.search(r"ready on (http://\S+)/v1", text)
        follower = re.search(r"rank 1 of 2 following rank 0 \(pid (\d+)\)", text)
        if ready and follower:
            launch.url, launch.follower_pid = ready.group(1), int(follower.group(1))
            return launch
        time.sleep(0.1)
    stop(launch)
    raise RuntimeError(f"the 2-rank server did not start: {''.join(launch.errors)[-3000:]}")


def stop(launch: Launch, timeout: float = 30) -> int:
    """Ctrl-C the launcher (it stops every rank); kill what is left; its exit status."""
    if launch.proc.poll() is None:
        launch.proc.send_signal(signal.SIGINT)
    try:
        return launch.proc.wait(timeout)
    finally:
        for pid in rank_pids(launch.port):
            os.kill(pid, signal.SIGKILL)
        if launch.proc.poll() is None:
            launch.proc.kill()
            launch.proc.wait()


@contextmanager
def two_ranks(model: str, *extra: str) -> Iterator[Launch]:
    """A running 2-rank server; stopped (every rank) afterwards."""
    launch = start(model, *extra)
    try:
        yield launch
    finally:
        stop(launch)


def same(got: Any, expected: Any, where: str = "") -> None:
    """Equal, except logprob floats within 1e-4: the sharded sums add in another order
    (ring all-reduce), so a logprob may differ in its last bits, as in the CLI's test;
    every token, text, finish reason and top-N id list must be identical."""
    if isinstance(expected, float):
        assert isinstance(got, float) and abs(got - expected) <= 1e-4, (where, got, expected)
    elif isinstance(expected, dict):
        assert list(got) == list(expected), where  # the same keys (top ids), in order
        for key in expected:
            same(got[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), where
        for i, (a, b) in enumerate(zip(got, expected, strict=True)):
            same(a, b, f"{where}[{i}]")
    else:
        assert got == expected, (where, got, expected)
