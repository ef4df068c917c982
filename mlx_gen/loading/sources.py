"""Turn what the user named (a folder, a ``.gguf`` file, a Hub repo id) into a local path.

Hub repo ids are looked up in the local ``huggingface_hub`` cache first; only when
they are missing there is a download tried, and an offline machine gets an error
that says so and how to fix it.
"""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.errors import HFValidationError

from mlx_gen.loading.default_model import default_model_path

# Files a checkpoint needs; weights in other formats (.bin, .pt) are never fetched.
HUB_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model", "*.jinja", "*.txt"]


def _looks_like_repo_id(source: str) -> bool:
    parts = source.split("/")
    return (
        len(parts) == 2
        and all(parts)
        and not source.startswith((".", "~"))
        and not source.endswith(".gguf")
    )


def _from_hub(repo_id: str, revision: str | None) -> Path:
    try:
        return Path(
            snapshot_download(
                repo_id, revision=revision, allow_patterns=HUB_PATTERNS, local_files_only=True
            )
        )
    except HFValidationError as e:
        raise FileNotFoundError(
            f"{repo_id!r} is neither a local path nor a valid Hub repo id ({e})"
        ) from None
    except Exception:  # Not in the cache: any of several huggingface_hub errors.
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise FileNotFoundError(
            f"{repo_id!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
            f"run `hf download {repo_id}` on a connected machine or pass a local folder"
        )
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=HUB_PATTERNS))
    except Exception as e:
        raise FileNotFoundError(
            f"{repo_id!r} is not in the local Hugging Face cache and could not be downloaded "
            f"({type(e).__name__}: {e}); check the repo id and your connection, run "
            f"`hf download {repo_id}`, or pass a local folder"
        ) from None


def resolve_source(source: str | os.PathLike[str] | None, *, revision: str | None = None) -> Path:
    """Return the local folder or ``.gguf`` file for ``source``.

    Args:
        source: A checkpoint folder, a ``.gguf`` file, a Hub repo id (``org/name``), or
            ``None`` for the embedded default model.
        revision: A Hub branch, tag or commit (Hub ids only).

    Raises:
        FileNotFoundError: The path does not exist, or the repo id is neither cached nor
            downloadable; the message says what was tried.
    """
    if source is None:
        return default_model_path()
    path = Path(source).expanduser()
    if path.exists():
        return path
    if isinstance(source, str) and _looks_like_repo_id(source):
        return _from_hub(source, revision)
    raise FileNotFoundError(
        f"model {str(source)!r} not found: expected an existing folder, a .gguf file, or a Hub "
        "repo id like 'org/name'"
    )
