"""``python -m mlx_gen.cli.launch`` (``mlx-gen-launch``): ``mlx.launch`` with an exit status.

``mlx.launch`` (MLX 0.32) stops the other ranks as soon as one exits with an error, but
then exits with status 0 itself, so a script or CI job cannot tell that the run failed.
This runs MLX's own launcher unchanged, with the same flags (``-n``, ``--hosts``,
``--hostfile``, ``--backend``, ``--env`` ...), records each rank's exit status, and
exits with the first failing rank's status after one line naming it. Statuses are
recorded for the backends that start ranks as processes (ring, JACCL, NCCL); with
``--backend mpi`` the status is ``mpirun``'s business and this exits 0. A ``--``
followed by no command is an ``error:`` line and status 2 (``mlx.launch`` ran nothing
and exited 0); Ctrl-C stops the ranks and exits 130 with one ``interrupted`` line.

Example::

    mlx-gen-launch -n 2 --backend ring -- python -m mlx_gen.generate --model DIR --prompt Hi
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Sequence

from mlx._distributed_utils import launch as mlx_launch


def _recording(exits: list[tuple[int, int]], started: list[object]) -> type:
    """``mlx.launch``'s process class, appending ``(rank, status)`` as each rank ends
    (and each started process to ``started``, to stop them on Ctrl-C)."""
    base = mlx_launch.RemoteProcess

    class RecordedProcess(base):  # type: ignore[misc, valid-type]
        def __init__(self, rank: int, *args: object) -> None:
            super().__init__(rank, *args)
            self._rank = rank
            started.append(self)

        @property
        def exit_status(self) -> tuple[int | None, bool | None]:
            code, killed = base.exit_status.fget(self)
            if code is not None and all(rank != self._rank for rank, _ in exits):
                exits.append((self._rank, code))
            return code, killed

    return RecordedProcess


def failure_line(exits: Sequence[tuple[int, int]]) -> tuple[str, int] | None:
    """The message and exit status for the first rank that failed, or ``None``.

    A rank stopped by the launcher after another failed ends with ``-15`` (SIGTERM); a
    positive status is preferred as the cause, then the first signal in order of exit.
    """
    failed = [(rank, code) for rank, code in exits if code != 0]
    if not failed:
        return None
    rank, code = next(((r, c) for r, c in failed if c > 0), failed[0])
    how = f"exited with status {code}" if code > 0 else f"was killed by signal {-code}"
    others = "; the other ranks were stopped" if len(exits) > 1 else ""
    return f"mlx-gen-launch: rank {rank} {how}{others}", code if code > 0 else 128 - code


def missing_command(argv: Sequence[str]) -> bool:
    """Whether ``argv`` ends with ``--`` and so names no command to run.

    >>> missing_command(["-n", "2", "--"]), missing_command(["-n", "2", "--", "python"])
    (True, False)
    """
    return "--" in argv and argv.index("--") == len(argv) - 1


def _stop(started: Sequence[object]) -> None:
    """Stop every started rank and wait for ``mlx.launch``'s threads watching them,
    without their "Node with rank N exited" warnings (the user asked for the stop)."""
    saved, mlx_launch.log_warning = mlx_launch.log_warning, lambda *args, **kwargs: None
    try:
        for process in started:
            try:
                process.terminate()  # type: ignore[attr-defined]
            except (OSError, subprocess.SubprocessError):
                pass
        for thread in threading.enumerate():
            if thread is not threading.current_thread() and not thread.daemon:
                thread.join(timeout=10)
    except KeyboardInterrupt:  # a second Ctrl-C: leave the rest to the launcher's threads
        pass
    finally:
        mlx_launch.log_warning = saved


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mlx.launch`` with ``argv`` (``None``: ``sys.argv[1:]``); return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if missing_command(args):
        print(
            "error: mlx-gen-launch: no command after '--' (e.g. mlx-gen-launch -n 2 "
            "--backend ring -- python -m mlx_gen.generate --model DIR --prompt Hi)",
            file=sys.stderr,
        )
        return 2
    exits: list[tuple[int, int]] = []
    started: list[object] = []
    original, saved_argv = mlx_launch.RemoteProcess, sys.argv
    mlx_launch.RemoteProcess = _recording(exits, started)
    sys.argv = ["mlx.launch", *args]
    try:
        mlx_launch.main()
    except KeyboardInterrupt:
        _stop(started)
        sys.stderr.write("\ninterrupted\n")
        return 130
    finally:
        mlx_launch.RemoteProcess, sys.argv = original, saved_argv
    failure = failure_line(exits)
    if failure is None:
        return 0
    print(failure[0], file=sys.stderr)
    return failure[1]


if __name__ == "__main__":
    raise SystemExit(main())
