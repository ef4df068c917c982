"""The prefix cache on disk: one mlx-lm ``save_prompt_cache`` file per entry.

Each file's metadata names the format version, the model (a fingerprint of its config
and first weights) and the tokenizer (a fingerprint of its vocabulary), plus the entry's
token ids. A file written for another model, tokenizer or format, or one that cannot be
read, is refused with its name and the reason.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten
from mlx_lm.models.cache import load_prompt_cache, save_prompt_cache

from mlx_gen.loading.loader import LoadedModel
from mlx_gen.prefix_cache.snapshot import KVSnapshot, restore

FORMAT = "mlx_gen.prefix_cache/1"
"""The format version written into every entry file."""

_PATTERN = "entry-*.safetensors"


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def identity(model: LoadedModel) -> dict[str, str]:
    """Metadata that ties an entry file to ``model`` and its tokenizer."""
    name, first = tree_flatten(model.model.parameters())[0]
    sample = np.array(first.reshape(-1)[:256].astype(mx.float32))  # a weights fingerprint
    config = json.dumps(model.config, sort_keys=True, default=str).encode()
    vocab = model.tokenizer.get_vocab()
    words = json.dumps(sorted(vocab.items(), key=lambda kv: kv[1]), ensure_ascii=False).encode()
    return {
        "format": FORMAT,
        "model": f"{Path(model.source).name}:{_digest(config + name.encode() + sample.tobytes())}",
        "tokenizer": _digest(words),
    }


def save_entries(
    folder: Path,
    model: LoadedModel,
    entries: Sequence[tuple[tuple[int, ...], KVSnapshot]],
    max_bytes: int | None,
) -> int:
    """Write ``entries`` (most recent first) while they fit ``max_bytes``; return the count."""
    folder.mkdir(parents=True, exist_ok=True)
    ident, written, total, keep = identity(model), 0, 0, set()
    for rank, (key, snap) in enumerate(entries):
        if max_bytes is not None and total + snap.nbytes > max_bytes:
            continue
        total += snap.nbytes
        target = folder / f"entry-{rank:06d}-{_digest(json.dumps(key).encode())}.safetensors"
        temp = target.with_name(f".tmp-{os.getpid()}-{target.name}")
        metadata = {**ident, "tokens": json.dumps(list(key))}
        save_prompt_cache(str(temp), restore(snap, snap.length), metadata)
        os.replace(temp, target)
        keep.add(target.name)
        written += 1
    for old in folder.glob(_PATTERN):
        if old.name not in keep:
            old.unlink()
    return written


def load_entries(folder: Path, model: LoadedModel) -> Iterator[tuple[tuple[int, ...], list[Any]]]:
    """``(token ids, mlx-lm caches)`` of each entry file, least recent first.

    Raises:
        FileNotFoundError: ``folder`` is not a folder.
        ValueError: A corrupt or foreign file (named, with what does not match).
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"prompt cache folder {str(folder)!r} does not exist")
    ident = identity(model)
    for path in sorted(folder.glob(_PATTERN), reverse=True):
        yield _read(path, ident)


def _read(path: Path, ident: dict[str, str]) -> tuple[tuple[int, ...], list[Any]]:
    try:
        layers, metadata = load_prompt_cache(str(path), return_metadata=True)
    except Exception as err:  # noqa: BLE001 - any failure to parse means a corrupt file
        raise ValueError(
            f"prompt cache file {str(path)!r} is corrupt or not a cache entry: "
            f"{type(err).__name__}: {err}"
        ) from err
    for field in ("format", "model", "tokenizer"):
        found = metadata.get(field) if isinstance(metadata, dict) else None
        if found != ident[field]:
            raise ValueError(
                f"prompt cache file {str(path)!r} was written for {field} {found!r}, "
                f"not this server's {ident[field]!r}; delete it or use another folder"
            )
    try:
        key = tuple(int(t) for t in json.loads(metadata["tokens"]))
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"prompt cache file {str(path)!r} has no valid token list") from err
    held = getattr(layers[0], "offset", None) if layers else None
    if not key or held != len(key):
        raise ValueError(
            f"prompt cache file {str(path)!r} holds {held} positions for {len(key)} tokens"
        )
    return key, layers
