"""``mlx-gen-launch -n N -- python -m mlx_gen.server``: what each rank does.

Rank 0 binds the address, serves HTTP and runs a
:class:`~mlx_gen.server.lockstep.LockstepWorker` thread; every other rank runs the same
worker loop on its main thread (:func:`follow`), fed by rank 0 over ``mx.distributed``,
and exits when rank 0 stops. Every rank keeps a prefix cache (its shard of each entry)
under rank 0's byte budget (:func:`share_cache_budget`); the cache folder flags are
refused by name (:func:`check_rank_flags`).
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import threading
from typing import Any

import mlx.core as mx

from mlx_gen.loading.loader import LoadedModel
from mlx_gen.prefix_cache import PrefixCache
from mlx_gen.prefix_cache.budget import default_budget
from mlx_gen.server.lockstep import LockstepWorker
from mlx_gen.server.rank_channel import Channel

__all__ = [
    "RankFlagError",
    "add_rank_flags",
    "check_rank_flags",
    "follow",
    "leader_worker",
    "process_rank",
    "share_cache_budget",
]

FAILURE_GRACE = 1.0  # seconds rank 0 keeps serving its 503s after a rank failure
REPORT_GRACE = 10.0  # seconds a follower waits for rank 0 to report a flag both refuse


class RankFlagError(ValueError):
    """A flag refused under ranks: every rank refuses it alike, so rank 0 alone reports it
    (one ``error:`` line; the others wait :data:`REPORT_GRACE` seconds, or until the
    launcher stops them when rank 0 exits)."""


def add_rank_flags(p: argparse.ArgumentParser) -> None:
    """Add ``--rank-timeout`` (used only under ``mlx.launch``)."""
    p.add_argument(
        "--rank-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="under mlx.launch: seconds one step may take before rank 0 declares a rank "
        "hung, answers 503 and exits with status 1 (default: 60)",
    )


def process_rank() -> int:
    """This process's rank (0 when not launched as one of several ranks)."""
    return mx.distributed.init().rank() if mx.distributed.is_available() else 0


def check_rank_flags(args: argparse.Namespace) -> None:
    """Refuse the prefix-cache folder flags and a bad ``--rank-timeout`` under ranks.

    Raises:
        RankFlagError: naming the flag.
    """
    for name in ("prompt_cache_dir", "prompt_cache_dir_bytes"):
        if getattr(args, name, None) is not None:
            raise RankFlagError(
                f"--{name.replace('_', '-')} is not available under mlx.launch: each rank "
                "holds only its shard of every cache entry (the KV heads are split), so "
                "one folder cannot hold them; warm the cache with --preload instead"
            )
    if not args.rank_timeout > 0:
        raise RankFlagError(f"--rank-timeout {args.rank_timeout} is invalid (expected > 0)")


def share_cache_budget(model: LoadedModel, args: argparse.Namespace) -> None:
    """Set ``args.prompt_cache_bytes`` on every rank to rank 0's budget (its flag, or a
    tenth of its memory), so every rank's cache evicts alike (a collective: every rank
    calls it, before :func:`~mlx_gen.server.prompt_cache_flags.open_cache`)."""
    if args.no_prompt_cache:
        return
    budget = args.prompt_cache_bytes
    mine = str(default_budget() if budget is None else budget).encode()
    args.prompt_cache_bytes = int(Channel(model.group).broadcast(mine).decode())


def leader_worker(
    model: LoadedModel, args: argparse.Namespace, on_failure: Any
) -> functools.partial:
    """The ``make_worker`` of rank 0's app: a lockstep worker over ``model.group``."""
    return functools.partial(
        LockstepWorker,
        channel=Channel(model.group),
        rank_timeout=args.rank_timeout,
        on_failure=on_failure,
    )


def stop_later(server: Any) -> None:
    """Ask ``server`` (uvicorn's) to shut down after :data:`FAILURE_GRACE` seconds."""
    threading.Timer(FAILURE_GRACE, lambda: setattr(server, "should_exit", True)).start()


def follow(model: LoadedModel, args: argparse.Namespace, cache: PrefixCache | None) -> int:
    """Run a non-zero rank until rank 0 stops; the exit status (1 after a rank failure).

    Ctrl-C is left to rank 0 (it stops every rank); SIGTERM (the launcher) ends the
    process at once.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    group = model.group
    worker = LockstepWorker(
        model,
        channel=Channel(group),
        rank_timeout=args.rank_timeout,
        max_batch_size=args.max_batch_size,
        max_queue=args.max_queue,
        prefix_cache=cache,
    )
    print(
        f"mlx_gen server rank {group.rank()} of {group.size()} following rank 0 "
        f"(pid {os.getpid()})",
        flush=True,
    )
    return worker.follow()
