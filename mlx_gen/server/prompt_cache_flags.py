"""The server's prefix-cache flags: build the cache, warm it, and keep it on disk.

``--prompt-cache-bytes`` (the memory budget, default a tenth of memory),
``--no-prompt-cache``, ``--prompt-cache-dir`` (entries loaded at start-up and written at
shutdown) with ``--prompt-cache-dir-bytes`` (its budget), and ``--preload FILE`` (a
system prompt or document prefilled at start-up).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mlx_gen.batch.prefix_rows import preload
from mlx_gen.loading.loader import LoadedModel
from mlx_gen.prefix_cache import PrefixCache
from mlx_gen.prefix_cache.budget import DEFAULT_FRACTION, parse_bytes

LOG = logging.getLogger("mlx_gen.server")
MAX_PRELOAD_BYTES = 4 << 20
"""A ``--preload`` file may hold at most this many bytes (4 MiB)."""


def add_cache_flags(p: argparse.ArgumentParser) -> None:
    """Add the prefix-cache flags to the server's parser."""
    g = p.add_argument_group("prompt cache")
    g.add_argument(
        "--prompt-cache-bytes",
        type=parse_bytes,
        metavar="SIZE",
        help="memory budget of the prefix cache shared by all requests, running batch "
        f"included, e.g. 2G (default: {DEFAULT_FRACTION:.0%} of memory)",
    )
    g.add_argument("--no-prompt-cache", action="store_true", help="keep nothing between requests")
    g.add_argument(
        "--prompt-cache-dir",
        type=Path,
        metavar="DIR",
        help="load cache entries from DIR at start-up and write them there at shutdown",
    )
    g.add_argument(
        "--prompt-cache-dir-bytes",
        type=parse_bytes,
        metavar="SIZE",
        help="the most bytes written to --prompt-cache-dir (default: --prompt-cache-bytes)",
    )
    g.add_argument(
        "--preload",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="a system prompt or document (UTF-8 text) to prefill at start-up; repeatable",
    )


def open_cache(model: LoadedModel, args: argparse.Namespace) -> PrefixCache | None:
    """The server's prefix cache from its flags (``None`` with ``--no-prompt-cache``).

    Raises:
        ValueError: Flags that contradict each other, a ``--preload`` file too large or
            not UTF-8, or a cache file refused (named by :meth:`PrefixCache.load`).
        OSError: A ``--preload`` file that cannot be read.
    """
    if args.no_prompt_cache:
        used = [f for f in ("prompt_cache_bytes", "prompt_cache_dir") if getattr(args, f)]
        if used or args.preload:
            flag = "--" + (used[0].replace("_", "-") if used else "preload")
            raise ValueError(f"{flag} contradicts --no-prompt-cache; pass one or the other")
        return None
    cache = PrefixCache(model, max_bytes=args.prompt_cache_bytes)
    if args.prompt_cache_dir is not None and args.prompt_cache_dir.is_dir():
        count = cache.load(args.prompt_cache_dir)
        LOG.info("prompt cache: %d entries loaded from %s", count, args.prompt_cache_dir)
    for path in args.preload:
        if path.stat().st_size > MAX_PRELOAD_BYTES:
            raise ValueError(
                f"--preload {str(path)!r} is {path.stat().st_size} bytes; "
                f"the limit is {MAX_PRELOAD_BYTES}"
            )
        text = path.read_text(encoding="utf-8")
        for ids in _preload_prompts(model, text):
            preload(model, cache, ids)
    return cache


def _preload_prompts(model: LoadedModel, text: str) -> list[list[int]]:
    """The token ids to warm for ``text``: as a chat's system message, and as plain text."""
    tokenizer = model.tokenizer
    prompts = [tokenizer.encode(text)]
    if getattr(tokenizer, "chat_template", None):
        system = [{"role": "system", "content": text}]
        prompts.append(list(tokenizer.apply_chat_template(system, tokenize=True)))
    return [p for p in prompts if p]


def save_cache(cache: PrefixCache | None, args: argparse.Namespace) -> None:
    """Write the cache to ``--prompt-cache-dir`` (at shutdown), within its byte budget."""
    if cache is None or args.prompt_cache_dir is None:
        return
    limit = args.prompt_cache_dir_bytes
    count = cache.save(args.prompt_cache_dir, max_bytes=cache.max_bytes if limit is None else limit)
    LOG.info("prompt cache: %d entries written to %s", count, args.prompt_cache_dir)
