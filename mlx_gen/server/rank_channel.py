"""Rank 0's bytes on every rank, and a check that the ranks still agree, over ``mx.distributed``.

:class:`Channel` is the lockstep server's only transport between ranks: ``all_sum``
collectives of small arrays (no sockets of our own). Each broadcast first sums a header
of ``1 + N`` int32s: the payload's length (rank 0's; the others add 0) and, in slot
``1 + r``, rank ``r``'s *digest* of the state every rank must hold alike (the prefix
cache's counters and size). Every rank then sees every digest, and a rank whose digest
differs from rank 0's raises :class:`Diverged` on every rank at the same step, naming it:
ranks that no longer agree stop rather than answer differently.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable
from typing import Any

import mlx.core as mx
import numpy as np

__all__ = ["Channel", "Diverged", "cache_digest"]


class Diverged(RuntimeError):
    """A rank's state (its digest) is no longer rank 0's."""


def cache_digest(cache: Any) -> int:
    """A 31-bit digest of a :class:`~mlx_gen.prefix_cache.PrefixCache`'s decisions so far:
    its entries, bytes and every counter (lookups, hits, cached tokens, inserts,
    evictions, refusals); 0 for no cache."""
    if cache is None:
        return 0
    state = (len(cache), cache.nbytes, dataclasses.astuple(cache.stats))
    return zlib.crc32(repr(state).encode()) & 0x7FFFFFFF


class Channel:
    """Rank 0's bytes, broadcast to every rank of ``group`` (an ``all_sum`` to which the
    other ranks add zeros: first the header, then, when there is one, the payload).

    Args:
        group: The ranks.
        digest: This rank's digest of the state the ranks must share, read at each
            broadcast (default: none, 0).
    """

    def __init__(
        self, group: mx.distributed.Group, digest: Callable[[], int] | None = None
    ) -> None:
        self.group, self.rank, self.size = group, group.rank(), group.size()
        self.digest = digest if digest is not None else (lambda: 0)

    def _sum(self, values: np.ndarray) -> np.ndarray:
        total = mx.distributed.all_sum(mx.array(values), group=self.group, stream=mx.cpu)
        return np.array(total)

    def broadcast(self, payload: bytes = b"") -> bytes:
        """Rank 0's ``payload`` on every rank (the others pass nothing).

        Raises:
            Diverged: A rank's digest differs from rank 0's (the same on every rank).
        """
        head = np.zeros(1 + self.size, dtype=np.int32)
        head[0] = len(payload) if self.rank == 0 else 0
        head[1 + self.rank] = self.digest()
        head = self._sum(head)
        self._check(head[1:])
        length = int(head[0])
        if length == 0:
            return b""
        if self.rank == 0:
            mine = np.frombuffer(payload, dtype=np.uint8)
        else:
            mine = np.zeros(length, dtype=np.uint8)
        return self._sum(mine).tobytes()

    def _check(self, digests: np.ndarray) -> None:
        differ = [r for r in range(1, self.size) if digests[r] != digests[0]]
        if differ:
            raise Diverged(
                f"the prefix cache of rank {differ[0]} no longer matches rank 0's (digest "
                f"{int(digests[differ[0]])} against {int(digests[0])}): the ranks would "
                "answer differently"
            )

    def followers(self) -> str:
        """The ranks rank 0 waits for, for messages (``rank 1`` or ``one of ranks 1..N-1``)."""
        return "rank 1" if self.size == 2 else f"one of ranks 1..{self.size - 1}"
