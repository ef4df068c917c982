"""Write a model folder safely: staged in a temporary folder, renamed into place.

:func:`staging_folder` gives a temporary folder next to the destination (same
filesystem, so the final rename is atomic); the writers fill it. If anything fails
the temporary folder is removed and the destination is left as it was. An existing
destination is replaced only with ``force``, only if it holds a model (never the user's
other files, never the current directory), and only once the new folder is complete.
Staging folders carry the writer's process id, so a later run removes those of a
killed run (:func:`remove_stale_staging`).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map
from mlx_lm.tokenizer_utils import TokenizerWrapper

from mlx_gen.loading.checkpoint import config_text
from mlx_gen.loading.generation_config import GENERATION_CONFIG_JSON
from mlx_gen.loading.sentencepiece_tokenizer import SentencePieceTokenizer

# mlx-lm's shard limit (``MAX_FILE_SIZE_GB``); a larger tensor gets a shard of its own.
MAX_SHARD_BYTES = 5 << 30
INDEX_JSON = "model.safetensors.index.json"

#: Called after each weight shard is written: ``(index, count, file_name, nbytes)``,
#: ``index`` counting from 1.
ShardProgress = Callable[[int, int, str, int], None]


def looks_like_model_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a model: a ``config.json`` and safetensors weights."""
    return (folder / "config.json").is_file() and (
        (folder / INDEX_JSON).is_file() or any(folder.glob("*.safetensors"))
    )


def _listing(folder: Path, limit: int = 8) -> str:
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    more = f", ... ({len(entries)} entries)" if len(entries) > limit else ""
    return ", ".join(entries[:limit]) + more


def check_destination(dst: Path, *, force: bool, source: Path) -> None:
    """Raise ``ValueError`` if writing a model folder at ``dst`` is not allowed.

    A missing path or an empty folder is fine. An existing non-empty folder needs
    ``force``, and even then is replaced only if it looks like a model folder
    (``config.json`` and ``*.safetensors``): anything else is the user's files, and the
    message lists them. A file, the current directory or one above it, and a folder
    holding the source are never replaced.
    """
    real_dst, real_src = dst.resolve(), source.resolve()
    if real_dst == Path.cwd().resolve() or real_dst in Path.cwd().resolve().parents:
        raise ValueError(
            f"output {str(dst)!r} is the current directory or contains it; choose a new path "
            "(e.g. a subfolder)"
        )
    if dst.exists() and not dst.is_dir():
        raise ValueError(f"output {str(dst)!r} is a file; the output must be a folder path")
    if real_src == real_dst or real_dst in real_src.parents:
        raise ValueError(
            f"output folder {str(dst)!r} holds the source {str(source)!r}; replacing it would "
            "delete the source, choose another path"
        )
    if not dst.is_dir() or not any(dst.iterdir()):
        return
    if not force:
        raise ValueError(
            f"output folder {str(dst)!r} exists and is not empty; pass --force (force=True) to "
            "replace it, or choose a new path"
        )
    if not looks_like_model_folder(dst):
        raise ValueError(
            f"output folder {str(dst)!r} does not look like a model folder (no config.json with "
            f"*.safetensors weights), so --force will not replace it; it holds: {_listing(dst)}; "
            "choose a new path"
        )


@contextmanager
def staging_folder(dst: Path, *, force: bool) -> Iterator[Path]:
    """Yield a temporary folder next to ``dst``; on success it becomes ``dst``.

    On an exception (including ``KeyboardInterrupt``, and ``SystemExit`` raised by a
    signal handler) the temporary folder is removed and ``dst`` is untouched. With
    ``force`` an existing ``dst`` is moved aside, the new folder renamed in, and only
    then the old one deleted. Staging folders that a killed run left beside ``dst`` are
    removed first (:func:`remove_stale_staging`).
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(dst)
    tmp = _sibling(dst, "tmp")
    try:
        yield tmp
        _swap_in(tmp, dst, force=force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _staging_pattern(dst: Path) -> re.Pattern[str]:
    """Names of :func:`_sibling` folders for ``dst``: ``.NAME.mlx-gen-PID-HEX.(tmp|old)``."""
    return re.compile(rf"\.{re.escape(dst.name)}\.mlx-gen-(\d+)-[0-9a-f]{{8}}\.(tmp|old)")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # Alive, someone else's.
        return True
    return True


def remove_stale_staging(dst: Path) -> list[Path]:
    """Remove the staging folders of ``dst`` whose converting process no longer runs.

    Only folders named as :func:`_sibling` names them (``.NAME.mlx-gen-PID-HEX.tmp``
    or ``.old``) are touched, and only when process ``PID`` is gone (a run killed with
    SIGKILL, or a crash). An ``.old`` folder still holding the previous ``dst`` while
    ``dst`` is missing (killed mid-swap) is moved back to ``dst`` first.

    Returns:
        The folders removed.
    """
    pattern, removed = _staging_pattern(dst), []
    for path in sorted(dst.parent.iterdir()):
        match = pattern.fullmatch(path.name)
        if not match or not path.is_dir() or _running(int(match.group(1))):
            continue
        if match.group(2) == "old" and (path / dst.name).is_dir() and not dst.exists():
            os.replace(path / dst.name, dst)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _sibling(dst: Path, kind: str) -> Path:
    """A new hidden folder beside ``dst``; unlike ``mkdtemp`` (mode 0700) it honours the umask.

    Its name carries this process's id, so that a later run can tell a folder left by
    a killed run from one still being written (:func:`remove_stale_staging`).
    """
    while True:
        name = f".{dst.name}.mlx-gen-{os.getpid()}-{secrets.token_hex(4)}.{kind}"
        path = dst.parent / name
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def _swap_in(tmp: Path, dst: Path, *, force: bool) -> None:
    if dst.is_dir() and not any(dst.iterdir()):
        dst.rmdir()
    if not dst.exists():
        os.replace(tmp, dst)
        return
    if not force:  # Created by someone else while we were writing.
        raise ValueError(f"output folder {str(dst)!r} appeared while converting; pass --force")
    old = _sibling(dst, "old")
    os.replace(dst, old / dst.name)
    try:
        os.replace(tmp, dst)
    except BaseException:
        os.replace(old / dst.name, dst)
        shutil.rmtree(old, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _shards(weights: Mapping[str, mx.array], max_bytes: int) -> list[dict[str, mx.array]]:
    shards: list[dict[str, mx.array]] = []
    size = 0
    for name in sorted(weights):
        value = weights[name]
        if not shards or size + value.nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = value
        size += value.nbytes
    return shards


def write_weights(
    folder: Path,
    model: nn.Module,
    *,
    max_shard_bytes: int = MAX_SHARD_BYTES,
    progress: ShardProgress | None = None,
) -> tuple[int, int]:
    """Write the model's parameters as safetensors shards plus ``model.safetensors.index.json``.

    Shards are named as mlx-lm names them (``model.safetensors``, or
    ``model-00001-of-00003.safetensors``). The model's parameters are released as
    their shard is written, to bound memory; the model is unusable afterwards.

    Returns:
        ``(total_bytes, shard_count)`` of the tensors written.
    """
    weights = dict(tree_flatten(model.parameters()))
    model.update(tree_map(lambda _: mx.array([]), model.parameters()))
    shards = _shards(weights, max_shard_bytes)
    del weights
    total = sum(v.nbytes for shard in shards for v in shard.values())
    weight_map: dict[str, str] = {}
    for i in range(len(shards)):
        shard, shards[i] = shards[i], {}
        name = (
            "model.safetensors"
            if len(shards) == 1
            else f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        )
        try:
            mx.save_safetensors(str(folder / name), shard, metadata={"format": "mlx"})
        except RuntimeError as e:  # MLX reports a failed write (e.g. a full disk) this way.
            raise OSError(f"cannot write {folder / name} ({e})") from None
        weight_map.update(dict.fromkeys(shard, name))
        if progress is not None:
            progress(i + 1, len(shards), name, sum(v.nbytes for v in shard.values()))
        del shard
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / INDEX_JSON).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return total, len(shards)


def write_config(folder: Path, config: Mapping[str, Any]) -> None:
    """Write ``config.json`` with sorted keys."""
    (folder / "config.json").write_text(config_text(config), encoding="utf-8")


def write_generation_config(folder: Path, settings: Mapping[str, Any]) -> None:
    """Write ``generation_config.json`` with sorted keys."""
    text = json.dumps(dict(settings), indent=2, sort_keys=True) + "\n"
    (folder / GENERATION_CONFIG_JSON).write_text(text, encoding="utf-8")


def write_tokenizer(folder: Path, tokenizer: TokenizerWrapper) -> None:
    """Save the tokenizer files and its chat template.

    A Hugging Face tokenizer saves itself. The SentencePiece-only tokenizer copies its
    ``tokenizer.model``, and its settings go to ``tokenizer_config.json``, which
    :func:`mlx_gen.loading.tokenizer.load_tokenizer` reads back.
    """
    inner = tokenizer._tokenizer  # The wrapped tokenizer; mlx-lm exposes no public accessor.
    inner.save_pretrained(str(folder))
    if isinstance(inner, SentencePieceTokenizer):
        settings = {
            "add_bos_token": inner.add_bos_token,
            "bos_token": inner.bos_token,
            "chat_template": inner.chat_template,
            "eos_token": inner.eos_token,
        }
        text = json.dumps(settings, indent=2, sort_keys=True) + "\n"
        (folder / "tokenizer_config.json").write_text(text, encoding="utf-8")
