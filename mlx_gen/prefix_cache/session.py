"""One call's view of a :class:`PrefixCache`: a :class:`PromptCache` filled from it.

:func:`~mlx_gen.decode.generate_tokens` (and the speculative and structured paths
behind it) take a ``PrefixCache`` wherever they take a ``PromptCache``: the call gets a
:class:`PrefixSession`, whose :meth:`reuse_for` restores the longest cached prefix of
the prompt, whose prefill stops at the checkpoints the lookup named (each stored as an
entry), and whose :meth:`release` stores the final KV (prompt and generated tokens, as
the token list records them) back into the shared cache.
"""

from __future__ import annotations

from collections.abc import Sequence

from mlx_gen.prefix_cache.cache import PrefixCache
from mlx_gen.prompt_cache import PromptCache


class PrefixSession(PromptCache):
    """A single-call :class:`PromptCache` backed by a shared :class:`PrefixCache`.

    Args:
        prefix: The shared cache.

    Attributes:
        cached_tokens: Prompt tokens restored from the shared cache by the last lookup.
    """

    def __init__(self, prefix: PrefixCache) -> None:
        super().__init__(prefix.model.model)
        self.prefix = prefix
        self.cached_tokens = 0
        self._checkpoints: tuple[int, ...] = ()

    @property
    def checkpoints(self) -> tuple[int, ...]:
        """Prompt positions where the prefill stops to store an entry."""
        return self._checkpoints

    def reuse_for(self, prompt_ids: Sequence[int]) -> int:
        """Restore the longest cached prefix of ``prompt_ids``; return its length."""
        hit = self.prefix.lookup(prompt_ids)
        self.layers, self.token_ids = hit.layers, [int(t) for t in prompt_ids[: hit.tokens]]
        self.cached_tokens, self._checkpoints = hit.tokens, hit.checkpoints
        return hit.tokens

    def record(self, token_ids: Sequence[int]) -> None:
        """Note ``token_ids`` as fed; at a checkpoint, store the KV in the shared cache."""
        super().record(token_ids)
        if len(self.token_ids) in self._checkpoints:
            self.prefix.insert(self.token_ids, self.layers)

    def release(self, claim: object) -> None:
        """End the call: settle the KV cache, then store it in the shared cache."""
        if self._owner is claim:
            super().release(claim)
            if self.token_ids:
                self.prefix.insert(self.token_ids, self.layers)


def call_cache(prompt_cache: PromptCache | PrefixCache | None, model: object) -> PromptCache:
    """The :class:`PromptCache` a call runs on: ``prompt_cache`` itself, a
    :class:`PrefixSession` over a :class:`PrefixCache`, or a fresh one for ``model``
    (an ``nn.Module``)."""
    if isinstance(prompt_cache, PrefixCache):
        return PrefixSession(prompt_cache)
    return prompt_cache or PromptCache(model)
