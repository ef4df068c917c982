"""A bounded prefix cache shared by every request (in memory, and saved to disk).

Engine layer: imports the loader and the single-call :mod:`mlx_gen.prompt_cache`; the
decode loops, the batch decoder and the server import it. :class:`PrefixCache` (trie,
LRU, byte budget) lives in :mod:`.cache`; KV copies in :mod:`.snapshot`; the trie in
:mod:`.trie`; files in :mod:`.disk`; one call's view in :mod:`.session`.
"""

from mlx_gen.prefix_cache.cache import CacheHit, CacheStats, PrefixCache
from mlx_gen.prefix_cache.session import PrefixSession

__all__ = ["CacheHit", "CacheStats", "PrefixCache", "PrefixSession"]
