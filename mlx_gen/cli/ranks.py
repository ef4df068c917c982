"""Who prints in a distributed run: rank 0 speaks, the other ranks compute silently.

Under ``mlx.launch`` every rank runs the same command line on the same inputs, so the
text, tables, JSON and diagnostics are printed by rank 0 only. Errors are printed by
every rank that hits them (a follower's own failure, such as a missing weights file
on its host, must be seen), except usage errors and sharding errors (heads not divisible
by the number of ranks), which every rank hits alike.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator


def launch_rank() -> int:
    """This process's rank as ``mlx.launch`` set it (``MLX_RANK``); 0 when not launched."""
    value = os.environ.get("MLX_RANK", "0")
    return int(value) if value.isdigit() else 0


@contextlib.contextmanager
def silenced(rank: int) -> Iterator[None]:
    """Send stdout and stderr to ``os.devnull`` inside the block unless ``rank`` is 0.

    Both are restored when the block exits, by an exception too, so an error raised
    inside is still reported by :func:`error_line`'s caller.
    """
    if rank == 0:
        yield
        return
    with open(os.devnull, "w", encoding="utf-8") as sink:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield


def error_line(error: BaseException, *, usage: bool) -> str | None:
    """The one ``error:`` line this rank prints for ``error``, or ``None`` to stay quiet.

    Args:
        error: The exception (its message's lines are joined onto one line).
        usage: Whether it is a command-line usage error: identical on every rank, so
            only rank 0 prints it.

    Returns:
        ``"error: ..."`` on rank 0 (and when not launched), ``"error: (rank N) ..."`` on
        a follower's own failure, ``None`` for a follower's usage error.
    """
    # Lines joined, but spaces inside a line kept: a quoted value ('   ') stays exact.
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    rank = launch_rank()
    if rank == 0:
        return f"error: {text}"
    return None if usage else f"error: (rank {rank}) {text}"


def yield_to_rank0(seconds: float = 10.0) -> None:
    """On a follower, wait before exiting with an error that rank 0 reports.

    ``mlx.launch`` stops every rank as soon as one exits: a follower that exits first
    with a usage error (which it does not print) could end rank 0 before rank 0 printed
    it, and the user would see no error at all. The launcher ends this wait when rank 0
    exits.
    """
    if launch_rank() != 0:
        time.sleep(seconds)
