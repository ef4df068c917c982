"""Hub repo ids from a cache laid out as huggingface_hub writes it; offline errors; SPM-only."""

from __future__ import annotations

import shutil

import huggingface_hub.constants
import mlx.core as mx
import numpy as np
import pytest
import sentencepiece

from mlx_gen.loading.loader import load
from mlx_gen.loading.sources import resolve_source
from tests.checkpoints import llama_config, write_checkpoint
from tests.reference_llama import forward

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    repo = cache / "models--tiny-org--tiny-llama"
    snapshot = repo / "snapshots" / COMMIT
    weights = write_checkpoint(snapshot, llama_config())
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return snapshot, weights


def test_repo_id_resolves_from_cache_without_network(hub_cache):
    snapshot, weights = hub_cache
    assert resolve_source("tiny-org/tiny-llama") == snapshot
    loaded = load("tiny-org/tiny-llama")
    out = loaded.model(mx.array([[1, 2, 3]]))[0]
    np.testing.assert_allclose(
        np.array(out), forward(weights, llama_config(), [1, 2, 3]), atol=1e-4, rtol=1e-4
    )


def test_uncached_repo_offline_says_so_and_how_to_fix(hub_cache):
    with pytest.raises(FileNotFoundError) as err:
        load("tiny-org/not-downloaded")
    msg = str(err.value)
    assert "not in the local Hugging Face cache" in msg and "HF_HUB_OFFLINE" in msg
    assert "hf download tiny-org/not-downloaded" in msg


def test_sentencepiece_only_checkpoint(tmp_path, stories_dir):
    folder = tmp_path / "spm"
    shutil.copytree(stories_dir, folder)
    (folder / "tokenizer.json").unlink()
    loaded = load(folder)
    tok = loaded.tokenizer
    assert tok.encode("Once upon a time") == [1, 403, 407, 261, 378]
    assert tok.decode([403, 407, 261, 378]) == "Once upon a time"
    processor = sentencepiece.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    for text in ["  two  spaces", "Lily's cat, Tom!", "\nnew line", "x = 3.14"]:
        ids = tok.encode(text, add_special_tokens=False)
        assert ids == processor.encode(text)
        assert tok.decode(ids) == processor.decode(ids)
    assert loaded.generation_config.eos_token_ids[0] == 2
