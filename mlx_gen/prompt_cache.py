"""A KV cache that remembers which tokens it holds, so calls can share a prefix.

mlx-lm owns the cache objects; :class:`PromptCache` adds the token bookkeeping. Pass
the same instance to several calls: each call reuses the longest common prefix of the
cached tokens and its prompt (trimming the rest), so a shared system prompt is
prefilled once. Processors still see the whole prompt, cached part included.

Consistency: the token list is the truth. Whenever a call ends, however it ends
(finished, closed early, an exception in a processor), the KV cache is trimmed back to
the tokens recorded, so the next call's logprobs are those of a fresh run. A cache
serves one generation at a time: a call that starts on it takes it over, and a stream
that was still running on it raises ``ValueError`` when resumed instead of writing
into the other call's cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mlx.nn as nn
from mlx_lm.models.cache import can_trim_prompt_cache, make_prompt_cache, trim_prompt_cache


class PromptCache:
    """mlx-lm KV caches for one model plus the token ids they hold.

    Args:
        model: The ``nn.Module`` the cache belongs to.
        max_kv_size: Keep at most this many positions (a rotating cache), or ``None``.

    >>> # cache = PromptCache(loaded.model)
    >>> # generate(loaded, prompt_a, prompt_cache=cache)  # prefills everything
    >>> # generate(loaded, prompt_b, prompt_cache=cache)  # reuses the shared prefix
    """

    def __init__(self, model: nn.Module, *, max_kv_size: int | None = None) -> None:
        self.model = model
        self.max_kv_size = max_kv_size
        self.layers: list[Any] = make_prompt_cache(model, max_kv_size=max_kv_size)
        self.token_ids: list[int] = []
        self._owner: object | None = None

    @property
    def checkpoints(self) -> tuple[int, ...]:
        """Prompt positions where the prefill pauses (none here; see PrefixSession)."""
        return ()

    def reuse_for(self, prompt_ids: Sequence[int]) -> int:
        """Prepare for ``prompt_ids``; return how many of them are already cached.

        The cache keeps the longest common prefix (at most ``len(prompt_ids) - 1``
        tokens, since the last prompt token must run to give the first logits). When
        the cache cannot be trimmed, it starts empty.
        """
        self.sync()
        common = 0
        for a, b in zip(self.token_ids, prompt_ids, strict=False):  # longest common prefix
            if a != b:
                break
            common += 1
        common = min(common, len(prompt_ids) - 1)
        extra = len(self.token_ids) - common
        if extra > 0:
            if can_trim_prompt_cache(self.layers):
                trim_prompt_cache(self.layers, extra)
            else:
                self.layers = make_prompt_cache(self.model, max_kv_size=self.max_kv_size)
                common = 0
        self.token_ids = list(prompt_ids[:common])
        return common

    def record(self, token_ids: Sequence[int]) -> None:
        """Note that ``token_ids`` were fed through the model after the cached ones."""
        self.token_ids.extend(int(t) for t in token_ids)

    def sync(self) -> None:
        """Trim the KV cache back to :attr:`token_ids` (reset it when it cannot be trimmed).

        The KV cache can hold more than was recorded: a look-ahead step already fed, or
        a step whose processor raised after the forward pass was queued.
        """
        held = getattr(self.layers[0], "offset", None) if self.layers else None
        extra = (held or 0) - len(self.token_ids)
        if held is None or extra == 0:
            return
        if extra > 0 and can_trim_prompt_cache(self.layers):
            trim_prompt_cache(self.layers, extra)
        else:
            self.layers = make_prompt_cache(self.model, max_kv_size=self.max_kv_size)
            self.token_ids = []

    def claim(self) -> object:
        """Start a generation on this cache; any call still running on it loses it.

        Returns:
            The claim to pass to :meth:`check` and :meth:`release`.
        """
        self._owner = claim = object()
        return claim

    def check(self, claim: object) -> None:
        """Raise if another call took this cache over since ``claim``.

        Raises:
            ValueError: Two generations were interleaved on one cache.
        """
        if self._owner is not claim:
            raise ValueError(
                "this PromptCache was used by another call while this generation was "
                "still running; a PromptCache serves one generation at a time (finish or "
                "close a stream before starting another on the same cache)"
            )

    def release(self, claim: object) -> None:
        """End ``claim``'s generation: make the KV cache agree with the token list."""
        if self._owner is claim:
            self.sync()
            self._owner = None
