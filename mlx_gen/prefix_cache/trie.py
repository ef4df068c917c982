"""A token trie with least-recently-used order and byte accounting (no arrays here).

Each entry sits at the node reached by its token sequence. :meth:`TokenTrie.match`
walks a prompt down the trie and reports the deepest entry on the path (an exact
prefix of the prompt) and where the walk stopped (how many tokens some entry shares
with the prompt). Recency is an ordered dict: a hit moves the entry to the
most-recent end (true LRU, not first-in-first-out), and :meth:`TokenTrie.pop_oldest`
takes from the other end. Nodes left without an entry or a child are pruned, so every
leaf holds an entry.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(eq=False)
class _Node(Generic[T]):
    parent: _Node[T] | None
    token: int
    children: dict[int, _Node[T]] = field(default_factory=dict)
    value: T | None = None


@dataclass(frozen=True)
class Match(Generic[T]):
    """Where a prompt meets the trie.

    Attributes:
        exact: The deepest entry whose tokens are a prefix of the prompt, or ``None``.
        exact_length: Its length (0 without one).
        shared: How many leading prompt tokens some entry also starts with
            (``>= exact_length``).
        below: Entries that hold all ``shared`` tokens (then diverge or go on), most
            recent first; trimming one of them gives a ``shared``-token prefix.
    """

    exact: T | None
    exact_length: int
    shared: int
    below: tuple[T, ...]


class TokenTrie(Generic[T]):
    """Values keyed by token sequences, in LRU order, with their sizes summed.

    >>> trie = TokenTrie()
    >>> trie.put((1, 2, 3), "a", nbytes=10)
    >>> trie.match([1, 2, 3, 4]).exact
    'a'
    """

    def __init__(self) -> None:
        self._root: _Node[T] = _Node(None, -1)
        self._order: OrderedDict[tuple[int, ...], tuple[_Node[T], int]] = OrderedDict()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._order)

    def keys(self) -> Iterator[tuple[int, ...]]:
        """Keys from least to most recently used."""
        return iter(list(self._order))

    def get(self, key: Sequence[int]) -> T | None:
        """The value stored under exactly ``key`` (recency unchanged)."""
        found = self._order.get(tuple(key))
        return None if found is None else found[0].value

    def put(self, key: Sequence[int], value: T, *, nbytes: int) -> None:
        """Store ``value`` under ``key`` (replacing one there) as the most recent entry."""
        key = tuple(key)
        self.remove(key)
        node = self._root
        for token in key:
            node = node.children.setdefault(token, _Node(node, token))
        node.value = value
        self._order[key] = (node, nbytes)
        self.nbytes += nbytes

    def touch(self, key: Sequence[int]) -> None:
        """Mark ``key``'s entry as just used."""
        self._order.move_to_end(tuple(key))

    def remove(self, key: Sequence[int]) -> T | None:
        """Drop ``key``'s entry (if any) and prune the nodes it leaves empty."""
        found = self._order.pop(tuple(key), None)
        if found is None:
            return None
        node, nbytes = found
        value, node.value = node.value, None
        self.nbytes -= nbytes
        while node.parent is not None and node.value is None and not node.children:
            del node.parent.children[node.token]
            node = node.parent
        return value

    def pop_oldest(self) -> tuple[tuple[int, ...], T] | None:
        """Remove and return the least recently used ``(key, value)``, or ``None``."""
        if not self._order:
            return None
        key = next(iter(self._order))
        return key, self.remove(key)

    def match(self, prompt: Sequence[int]) -> Match[T]:
        """Walk ``prompt`` down the trie (see :class:`Match`)."""
        node, depth = self._root, 0
        exact, exact_length = None, 0
        for token in prompt:
            child = node.children.get(token)
            if child is None:
                break
            node, depth = child, depth + 1
            if node.value is not None:
                exact, exact_length = node.value, depth
        below = self._subtree(node) if depth > 0 else []
        rank = {id(v): i for i, (n, _) in enumerate(self._order.values()) for v in [n.value]}
        below.sort(key=lambda v: -rank[id(v)])
        return Match(exact, exact_length, depth, tuple(below))

    @staticmethod
    def _subtree(node: _Node[T]) -> list[T]:
        found, stack = [], [node]
        while stack:
            n = stack.pop()
            if n.value is not None:
                found.append(n.value)
            stack.extend(n.children.values())
        return found
