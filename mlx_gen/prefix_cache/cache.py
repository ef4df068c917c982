"""The prefix cache: KV states of earlier prompts, shared by every request, bounded in bytes.

Semantics (the guarantees the server and the Python API rely on):

* **Exact.** An entry is the KV cache after exactly its token sequence. A lookup
  restores either an entry whose tokens are a prefix of the prompt, or (when the
  caches can be trimmed) an entry that shares a longer prefix with the prompt, cut
  back to the shared tokens. Caches that cannot be trimmed (a sliding window that has
  wrapped around) are only ever restored whole, so no stale position is served.
* **Private.** A lookup returns fresh cache objects; the request that receives them
  writes only into those, and an entry is never changed after it is stored.
* **Bounded.** Every entry's arrays are measured (``.nbytes``); the entries plus the
  bytes :meth:`PrefixCache.reserve` d for the running batch never exceed ``max_bytes``:
  least recently used entries are evicted first (a hit refreshes an entry), and an
  entry larger than the room left is not admitted.
* **Checkpoints.** When a prompt shares more tokens with an entry than can be reused
  (non-trimmable caches), the lookup names that position as a checkpoint: the prefill
  stores an entry there, so the next prompt with that prefix (a shared system prompt)
  hits.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlx_lm.models.cache import make_prompt_cache

from mlx_gen.loading.loader import LoadedModel
from mlx_gen.prefix_cache import disk
from mlx_gen.prefix_cache.budget import check_budget, default_budget
from mlx_gen.prefix_cache.snapshot import KVSnapshot, restore, snapshot
from mlx_gen.prefix_cache.trie import TokenTrie


@dataclass(frozen=True)
class CacheHit:
    """What a lookup gives a request.

    Attributes:
        tokens: Leading prompt tokens the caches already hold (0: a miss).
        layers: Fresh mlx-lm caches (one per layer) holding them, the request's own.
        checkpoints: Later prompt positions where the prefill should store an entry.
    """

    tokens: int
    layers: list[Any]
    checkpoints: tuple[int, ...] = ()


@dataclass
class CacheStats:
    """Counters over the cache's life (read by the server's /health and the tests)."""

    lookups: int = 0
    hits: int = 0
    cached_tokens: int = 0
    inserted: int = 0
    evicted: int = 0
    refused: int = 0


class PrefixCache:
    """A token trie over KV snapshots with LRU eviction and a byte budget.

    Args:
        model: The loaded model whose KV states are cached.
        max_bytes: The budget (``None``: :func:`~mlx_gen.prefix_cache.budget.default_budget`,
            a tenth of memory; ``0`` stores nothing).

    Raises:
        ValueError: ``max_bytes`` is not a byte count >= 0.

    >>> # cache = PrefixCache(loaded, max_bytes=512 << 20)
    >>> # generate(loaded, prompt, prompt_cache=cache)  # reuses any cached prefix
    """

    def __init__(self, model: LoadedModel, *, max_bytes: int | None = None) -> None:
        self.model = model
        if max_bytes is not None:
            check_budget("max_bytes", max_bytes)
        self.max_bytes = default_budget() if max_bytes is None else max_bytes
        self.stats = CacheStats()
        self._trie: TokenTrie[tuple[tuple[int, ...], KVSnapshot]] = TokenTrie()
        self._reserved = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """Bytes held by the entries (their arrays' ``.nbytes``)."""
        return self._trie.nbytes

    def __len__(self) -> int:
        return len(self._trie)

    def measure(self) -> int:
        """Bytes of every array the entries hold, summed afresh (equals :attr:`nbytes`)."""
        with self._lock:
            snaps = [self._trie.get(k)[1] for k in self._trie.keys()]
        return sum(a.nbytes for s in snaps for st in s.states for a in st if hasattr(a, "nbytes"))

    def keys(self) -> list[tuple[int, ...]]:
        """The entries' token sequences, least recently used first."""
        with self._lock:
            return list(self._trie.keys())

    def lookup(self, prompt_ids: Sequence[int]) -> CacheHit:
        """The longest cached prefix of ``prompt_ids`` (all but its last token).

        The last prompt token is never restored: it must run to give the first logits.
        A hit refreshes the entry used.
        """
        ids = [int(t) for t in prompt_ids][: max(len(prompt_ids) - 1, 0)]
        with self._lock:
            self.stats.lookups += 1
            match = self._trie.match(ids)
            key, snap, keep = None, None, 0
            if match.shared > match.exact_length:
                usable = [e for e in match.below if e[1].trimmable]
                if usable:
                    (key, snap), keep = usable[0], match.shared
            if snap is None and match.exact is not None:
                (key, snap), keep = match.exact, match.exact_length
            if snap is None:
                layers = make_prompt_cache(self.model.model)
            else:
                self._trie.touch(key)
                layers = restore(snap, keep)
                self.stats.hits += 1
                self.stats.cached_tokens += keep
        checkpoints = (match.shared,) if match.shared > keep else ()
        return CacheHit(keep, layers, checkpoints)

    def insert(self, token_ids: Sequence[int], layers: Sequence[Any]) -> bool:
        """Store a copy of ``layers``, the KV cache after exactly ``token_ids``.

        Returns:
            True when stored (or already there, then refreshed); False when the entry
            does not fit the room the budget leaves.
        """
        key = tuple(int(t) for t in token_ids)
        if not key:
            return False
        with self._lock:
            if self._trie.get(key) is not None:
                self._trie.touch(key)
                return True
        snap = snapshot(layers, len(key))  # evaluates the copy, outside the lock
        return self._admit(key, snap)

    def _admit(self, key: tuple[int, ...], snap: KVSnapshot) -> bool:
        with self._lock:
            if snap.nbytes > self.max_bytes - self._reserved:
                self.stats.refused += 1
                return False
            if snap.trimmable:  # it serves its own prefixes: shorter trimmable entries go
                for n in range(1, len(key)):
                    old = self._trie.get(key[:n])
                    if old is not None and old[1].trimmable:
                        self._trie.remove(key[:n])
            self._trie.put(key, (key, snap), nbytes=snap.nbytes)
            self.stats.inserted += 1
            self._evict()
            return True

    def reserve(self, nbytes: int) -> None:
        """Keep ``nbytes`` of the budget for live KV caches (the running batch); evict to fit."""
        with self._lock:
            self._reserved = max(int(nbytes), 0)
            self._evict()

    def _evict(self) -> None:
        while self._trie.nbytes + self._reserved > self.max_bytes and len(self._trie):
            self._trie.pop_oldest()
            self.stats.evicted += 1

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            while self._trie.pop_oldest() is not None:
                pass

    def save(self, path: str | Path, *, max_bytes: int | None = None) -> int:
        """Write the entries, most recent first, into the folder ``path``.

        One ``.safetensors`` file per entry, as mlx-lm's ``save_prompt_cache`` writes it,
        with metadata naming the format version, the model and the tokenizer. Files are
        written under temporary names and renamed; entry files already there that are
        not rewritten are removed.

        Args:
            path: The folder (created if missing).
            max_bytes: Write entries while their bytes fit this (``None``: all).

        Returns:
            The number of entries written.
        """
        limit = None if max_bytes is None else check_budget("max_bytes", max_bytes)
        with self._lock:
            entries = [self._trie.get(k) for k in reversed(list(self._trie.keys()))]
        return disk.save_entries(Path(path), self.model, entries, limit)

    def load(self, path: str | Path) -> int:
        """Add the entries saved in the folder ``path`` (as :meth:`save` wrote them).

        Returns:
            The number of entries admitted (the budget still applies).

        Raises:
            FileNotFoundError: ``path`` is not a folder.
            ValueError: A file that is not a cache entry, is corrupt, or was written for
                another model, tokenizer or format version (the file and the mismatch named).
        """
        admitted = 0
        for key, layers in disk.load_entries(Path(path), self.model):
            admitted += self._admit(key, snapshot(layers, len(key)))
        return admitted
