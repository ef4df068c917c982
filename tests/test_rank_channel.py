"""The lockstep server's channel: rank 0's bytes on every rank, and the prefix-cache check.

Two ranks are simulated inside this process: :class:`TwoRanks` is rank 0 of a 2-rank
group whose ``all_sum`` adds what the other rank would contribute (zeros but its digest).
The real 2-rank path runs in ``tests/test_distributed_server.py``.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

import mlx_gen as mg
from mlx_gen.prefix_cache import PrefixCache
from mlx_gen.server.rank_channel import Channel, Diverged, cache_digest


class _Group:
    def rank(self) -> int:
        return 0

    def size(self) -> int:
        return 2


class TwoRanks(Channel):
    """Rank 0 of two; rank 1's digest is ``other`` (it adds zeros elsewhere)."""

    def __init__(self, mine: int, other: int) -> None:
        super().__init__(_Group(), digest=lambda: mine)
        self.other, self.sums = other, []

    def _sum(self, values: np.ndarray) -> np.ndarray:
        theirs = np.zeros_like(values)
        if len(self.sums) == 0:  # the header: length, digest 0, digest 1
            theirs[2] = self.other
        self.sums.append(values.copy())
        return values + theirs


def test_payload_travels_and_equal_digests_pass() -> None:
    channel = TwoRanks(mine=12345, other=12345)
    assert channel.broadcast(b"hello") == b"hello"
    assert list(channel.sums[0]) == [5, 12345, 0]  # length, rank 0's digest, rank 1's slot
    assert TwoRanks(7, 7).broadcast() == b""


def test_a_rank_whose_cache_differs_is_named() -> None:
    with pytest.raises(Diverged, match=r"prefix cache of rank 1 no longer matches .*9 against 8"):
        TwoRanks(mine=8, other=9).broadcast(b"x")


def test_the_digest_follows_every_cache_decision(stories_dir) -> None:
    model = mg.load(stories_dir)
    a, b = PrefixCache(model, max_bytes=1 << 30), PrefixCache(model, max_bytes=1 << 30)
    assert cache_digest(None) == 0 and cache_digest(a) == cache_digest(b)
    ids = model.tokenizer.encode("Once upon a time there was a dog")
    for cache in (a, b):  # the same ops on two "ranks": the same digest
        hit = cache.lookup(ids)
        model.model(mx.array(ids[:-1])[None], cache=hit.layers)
        assert cache.insert(ids[:-1], hit.layers)
    same = cache_digest(a)
    assert same == cache_digest(b) and same != cache_digest(PrefixCache(model, max_bytes=1 << 30))
    a.lookup(ids)  # a hit on one rank only
    assert cache_digest(a) != cache_digest(b) and 0 <= cache_digest(a) < 2**31
    b.lookup(ids)
    assert cache_digest(a) == cache_digest(b)
    b.reserve(b.max_bytes)  # an eviction on one rank only
    assert cache_digest(a) != cache_digest(b)
