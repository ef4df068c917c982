"""Where the command line's output goes: stdout's state and the ``--output`` file.

Checked before the model is loaded, so that a batch never runs only to find that its
results cannot be written:

* stdout closed at start (``mlx-gen ... >&-``): an error, unless the results go to
  ``--output``;
* ``--output`` naming an existing path (never overwritten; there is no ``--force``) or
  a folder that does not exist: an error naming the path.

A stdout that closes while writing (``| head``) is handled by :func:`quiet_stdout`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mlx_gen.cli.parser import UsageError


def check_stdout(output: str | None) -> None:
    """Refuse to start when stdout is closed and the output would go there.

    Raises:
        UsageError: stdout is closed and ``output`` is ``None``.
    """
    if sys.stdout is not None:
        return
    if output is None:
        raise UsageError("standard output is closed: there is nowhere to write the output")
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (lives as long as the process)


def check_output_path(output: str) -> None:
    """Refuse an ``--output`` that exists or whose folder does not.

    Raises:
        UsageError: Naming the path and what to do.
    """
    target = Path(output)
    if target.exists() or target.is_symlink():
        raise UsageError(
            f"argument --output: {output!r} exists; mlx-gen never overwrites a file "
            "(remove it or choose another path)"
        )
    if not target.parent.is_dir():
        raise UsageError(f"argument --output: the folder of {output!r} does not exist")


def quiet_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so the exit flush stays silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, AttributeError, ValueError):
        pass
