"""The ``mlx-gen`` console script: Ctrl-C is handled from the process's first instant.

Importing :mod:`mlx_gen` (MLX, mlx-lm, the tokenizers) takes a second or more, and a
Ctrl-C during that import would print a traceback and end the process with SIGINT.
This package is outside :mod:`mlx_gen` so that importing it costs nothing; it imports
the command line inside ``try`` (a guard, not a way around an import cycle), so an
interrupt at any point exits with status 130 and one ``interrupted`` line.
It imports only :mod:`mlx_gen.cli.main` (:mod:`mlx_gen.convert.main` for
``mlx-gen-convert``, :mod:`mlx_gen.cli.launch` for ``mlx-gen-launch``,
:mod:`mlx_gen.server.main` for ``mlx-gen-server``), and only when
called.
"""

from __future__ import annotations

import importlib
import sys


def _guarded(module: str) -> int:
    """Import ``module`` and run its ``main``; a Ctrl-C at any point exits with 130."""
    try:
        return importlib.import_module(module).main()
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted\n")
        return 130


def mlx_gen() -> int:
    """Run ``mlx-gen``: :func:`mlx_gen.cli.main.main`, Ctrl-C during start-up included."""
    return _guarded("mlx_gen.cli.main")


def convert() -> int:
    """Run ``mlx-gen-convert``: :func:`mlx_gen.convert.main.main`, Ctrl-C included."""
    return _guarded("mlx_gen.convert.main")


def launch() -> int:
    """Run ``mlx-gen-launch``: :func:`mlx_gen.cli.launch.main`, Ctrl-C included."""
    return _guarded("mlx_gen.cli.launch")


def server() -> int:
    """Run ``mlx-gen-server``: :func:`mlx_gen.server.main.main`, Ctrl-C included."""
    return _guarded("mlx_gen.server.main")
