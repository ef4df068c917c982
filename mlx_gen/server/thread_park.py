"""How the worker thread ends: its work freed, then parked until the process exits.

MLX 0.32 aborts the process at exit ("terminate called without an active exception")
when an array evaluated on a thread outlives that thread, so the worker thread never
returns: it frees what it can, signals that it stopped, and waits forever (it is a
daemon, so the process still exits).
"""

from __future__ import annotations

import gc
import threading
from typing import NoReturn

import mlx.core as mx

from mlx_gen.batch.step import STREAM


def park(stopped: threading.Event) -> NoReturn:
    """Collect garbage, finish MLX's queued work, set ``stopped``, then block forever."""
    gc.collect()
    mx.synchronize(STREAM)
    mx.synchronize()
    stopped.set()
    threading.Event().wait()
    raise AssertionError("unreachable")
