"""The compute floor of a cached turn: the model's own forward pass, in-process, no server.

For a turn that finds ``cached`` tokens in the cache and must prefill ``new`` more, the
least any engine can do before its first token is one forward pass of the ``new``
tokens (logits for the last only) on a KV cache already holding ``cached`` tokens. On a
small model that pass costs more than the same tokens alone, because every new token
attends to the whole context. :class:`Floor` measures both, back to back, between a
benchmark's requests (so under the same load), for ``bench_prefix_cache.py``.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import mlx.core as mx
from mlx_lm.models.cache import make_prompt_cache, trim_prompt_cache

import mlx_gen


class Floor:
    """One growing conversation's floors, turn by turn (``cached`` never decreasing).

    Args:
        model_dir: The checkpoint (loaded with :func:`mlx_gen.load`: what its server runs).
        tries: Passes per measurement; the fastest counts.
    """

    def __init__(self, model_dir: Path, tries: int = 2) -> None:
        loaded = mlx_gen.load(str(model_dir))
        self.model, self.vocab, self.tries = loaded.model, loaded.vocab_size, tries
        self.rng = random.Random(0)
        self.restart()

    def restart(self) -> None:
        """Begin a new conversation: an empty context."""
        self.context, self.held = make_prompt_cache(self.model), 0

    def _ids(self, n: int) -> mx.array:
        return mx.array([[self.rng.randrange(3, self.vocab) for _ in range(n)]], dtype=mx.int32)

    def _fastest(self, cache: list, ids: mx.array) -> float:
        """As a server does it: all but the last id fill the cache (no logits: a
        (1, n, V) head would cost more than the layers), then the last gives logits."""
        best = float("inf")
        for _ in range(self.tries):
            start = time.perf_counter()
            self.model(ids[:, :-1], cache=cache)
            mx.eval([c.state for c in cache])
            logits = self.model(ids[:, -1:], cache=cache)[:, -1, :]  # (1, V)
            mx.eval(logits, [c.state for c in cache])
            best = min(best, time.perf_counter() - start)
            trim_prompt_cache(cache, ids.shape[1])
        return best

    def measure(self, cached: int, new: int) -> dict:
        """``{"context": s, "alone": s}``: the fastest pass of ``new`` random tokens on a
        cache of ``cached`` tokens, and on an empty cache."""
        for start in range(self.held, cached, 512):  # grow the context (untimed)
            self.model(self._ids(min(512, cached - start)), cache=self.context)
            mx.eval([c.state for c in self.context])
        self.held = max(self.held, cached)
        ids = self._ids(new)
        return {
            "context": self._fastest(self.context, ids),
            "alone": self._fastest(make_prompt_cache(self.model), ids),
        }
