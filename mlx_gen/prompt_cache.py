"""A KV cache that remembers which tokens it holds, so calls can share a prefix.

mlx-lm owns the cache objects; :class:`PromptCache` adds the token bookkeeping. Pass
the same instance to several calls: each call reuses the longest common prefix of the
cached tokens and its prompt (trimming the rest), so a shared system prompt is
prefilled once. Processors still see the whole prompt, cached part included.
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

    def reuse_for(self, prompt_ids: Sequence[int]) -> int:
        """Prepare for ``prompt_ids``; return how many of them are already cached.

        The cache keeps the longest common prefix (at most ``len(prompt_ids) - 1``
        tokens, since the last prompt token must run to give the first logits). When
        the cache cannot be trimmed, it starts empty.
        """
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
