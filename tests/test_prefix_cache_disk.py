"""The prefix cache on disk: a round trip, and files that must be refused by name."""

from __future__ import annotations

import json

import pytest
from mlx_lm.models.cache import save_prompt_cache

import mlx_gen
from mlx_gen import GenerationSettings, PrefixCache, generate_tokens
from mlx_gen.prefix_cache.budget import parse_bytes
from mlx_gen.prefix_cache.disk import identity
from mlx_gen.prefix_cache.snapshot import restore

pytestmark = pytest.mark.slow
GREEDY = GenerationSettings(max_tokens=6, temperature=0.0, logprobs=0)


@pytest.fixture(scope="module")
def stories():
    from tests.conftest import STORIES

    if not (STORIES / "config.json").exists():
        pytest.skip(f"{STORIES} is absent")
    return mlx_gen.load(STORIES)


def filled(model, texts):
    cache = PrefixCache(model, max_bytes=64 << 20)
    for text in texts:
        list(generate_tokens(model, model.tokenizer.encode(text), GREEDY, prompt_cache=cache))
    return cache


def test_round_trip_keeps_entries_order_and_outputs(stories, tmp_path):
    texts = ["Once upon a time there was a cat", "The dog ran to the park and"]
    cache = filled(stories, texts)
    assert cache.save(tmp_path / "pc") == 2
    again = PrefixCache(stories, max_bytes=64 << 20)
    assert again.load(tmp_path / "pc") == 2
    assert again.keys() == cache.keys() and again.measure() == cache.measure()
    ids = stories.tokenizer.encode(texts[0])
    assert again.lookup(ids).tokens == len(ids) - 1
    cold = [(t.token, t.logprobs["raw"].logprob) for t in generate_tokens(stories, ids, GREEDY)]
    warm = list(generate_tokens(stories, ids, GREEDY, prompt_cache=again))
    assert [t.token for t in warm] == [c[0] for c in cold]
    assert (
        max(abs(t.logprobs["raw"].logprob - c[1]) for t, c in zip(warm, cold, strict=True)) <= 1e-4
    )
    assert cache.save(tmp_path / "small", max_bytes=cache.nbytes // 2 + 1) == 1  # its budget


def test_a_corrupt_file_is_refused_by_name(stories, tmp_path):
    filled(stories, ["Once upon a time"]).save(tmp_path)
    (path,) = tmp_path.glob("entry-*.safetensors")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=f"{path.name}.*corrupt"):
        PrefixCache(stories).load(tmp_path)


def test_a_file_from_another_model_is_refused(stories, llama_dir, tmp_path):
    other = mlx_gen.load(llama_dir)
    filled(other, ["the word"]).save(tmp_path)
    with pytest.raises(ValueError, match="written for model 'llama:"):
        PrefixCache(stories).load(tmp_path)


@pytest.mark.parametrize("field", ["format", "tokenizer"])
def test_a_file_from_another_format_or_tokenizer_is_refused(stories, tmp_path, field):
    cache = filled(stories, ["Once upon a time"])
    (key,) = cache.keys()
    layers = restore(cache._trie.get(key)[1], len(key))
    metadata = {**identity(stories), "tokens": json.dumps(list(key)), field: "other"}
    save_prompt_cache(str(tmp_path / "entry-000000-x.safetensors"), layers, metadata)
    refused = f"entry-000000-x.safetensors' was written for {field} 'other'"
    with pytest.raises(ValueError, match=refused):
        PrefixCache(stories).load(tmp_path)


def test_a_missing_folder_and_bad_sizes_are_named(stories, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        PrefixCache(stories).load(tmp_path / "nowhere")
    assert parse_bytes("512M") == 512 << 20 and parse_bytes("2G") == 2 << 30
    assert parse_bytes("1000") == 1000 and parse_bytes("1.5KiB") == 1536
    with pytest.raises(ValueError, match="'lots' is not a byte size"):
        parse_bytes("lots")
