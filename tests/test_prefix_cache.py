"""The shared prefix cache through the Python API, on real weights (stories260K, SmolLM2).

Hit / partial hit / miss, LRU (not FIFO) eviction, the byte budget under 200 distinct
prompts, cold == warm outputs (greedy ids equal, logprobs within 1e-4), and a cache that
stays exact when a stream is closed early; the speculative and structured paths use it.
"""

from __future__ import annotations

import pytest

import mlx_gen
from mlx_gen import Choice, GenerationSettings, PrefixCache, PromptLookup, generate_tokens
from mlx_gen.prefix_cache.trie import TokenTrie

pytestmark = pytest.mark.slow
GREEDY = GenerationSettings(max_tokens=8, temperature=0.0, logprobs=0)
STORY = "Once upon a time there was a little girl named Lily. She loved to play"


@pytest.fixture(scope="module")
def stories():
    from tests.conftest import STORIES

    if not (STORIES / "config.json").exists():
        pytest.skip(f"{STORIES} is absent")
    return mlx_gen.load(STORIES)


def run(model, ids, settings=GREEDY, cache=None):
    """``(ids, raw logprobs)`` of one call."""
    out = list(generate_tokens(model, ids, settings, prompt_cache=cache))
    return [t.token for t in out], [t.logprobs["raw"].logprob for t in out if t.logprobs]


def assert_same(cold, warm):
    assert warm[0] == cold[0]
    assert max(abs(a - b) for a, b in zip(cold[1], warm[1], strict=True)) <= 1e-4


def test_trie_refreshes_recency_on_a_hit():
    trie = TokenTrie()
    for key in [(1, 2), (3, 4), (5, 6)]:
        trie.put(key, key, nbytes=10)
    trie.touch((1, 2))  # a hit: (1, 2) is now the most recent
    assert [trie.pop_oldest()[0] for _ in range(3)] == [(3, 4), (5, 6), (1, 2)]
    assert trie.nbytes == 0 and len(trie) == 0


def test_hit_partial_hit_and_miss(stories):
    ids = stories.tokenizer.encode(STORY)
    cache = PrefixCache(stories, max_bytes=64 << 20)
    cold = run(stories, ids)
    assert_same(cold, run(stories, ids, cache=cache))  # a miss: fills the cache
    assert cache.stats.hits == 0 and len(cache) == 1
    assert cache.lookup(ids).tokens == len(ids) - 1  # a hit: all but the last prompt id
    other = ids[:10] + [500, 501, 502]
    assert cache.lookup(other).tokens == 10  # a partial hit: the entry cut back to 10
    assert cache.lookup([400, 401, 402]).tokens == 0  # a miss
    assert_same(run(stories, other), run(stories, other, cache=cache))
    assert_same(cold, run(stories, ids, cache=cache))


def test_eviction_is_least_recently_used_not_first_in(stories):
    prompts = [[1, 300 + i, *range(20, 40)] for i in range(3)]
    probe = PrefixCache(stories)
    run(stories, prompts[0], GenerationSettings(max_tokens=1), probe)
    size = probe.nbytes
    cache = PrefixCache(stories, max_bytes=int(size * 2.5))
    one = GenerationSettings(max_tokens=1)
    run(stories, prompts[0], one, cache)
    run(stories, prompts[1], one, cache)
    assert cache.lookup(prompts[0]).tokens > 0  # a hit refreshes prompts[0]
    run(stories, prompts[2], one, cache)  # over budget: the least recently used goes
    assert cache.lookup(prompts[0]).tokens == len(prompts[0]) - 1
    assert cache.lookup(prompts[1]).tokens == 1  # gone: only the shared BOS is left
    assert cache.stats.evicted == 1


def test_budget_is_never_exceeded_over_200_distinct_prompts(stories):
    cache = PrefixCache(stories, max_bytes=150_000)
    settings = GenerationSettings(max_tokens=2, temperature=0.0)
    for i in range(200):
        ids = [1, 100 + i % 300, 50 + (i * 7) % 200, *range(10, 10 + i % 40)]
        run(stories, ids, settings, cache)
        assert cache.measure() == cache.nbytes <= cache.max_bytes
    assert cache.stats.evicted > 100 and len(cache) >= 1


def test_an_entry_larger_than_the_budget_is_refused(stories):
    cache = PrefixCache(stories, max_bytes=1000)
    run(stories, stories.tokenizer.encode(STORY), GenerationSettings(max_tokens=2), cache)
    assert len(cache) == 0 and cache.nbytes == 0 and cache.stats.refused >= 1
    with pytest.raises(ValueError, match="max_bytes=-1 is invalid"):
        PrefixCache(stories, max_bytes=-1)


def test_a_stream_closed_early_leaves_an_exact_entry(stories):
    ids = stories.tokenizer.encode(STORY)
    cache = PrefixCache(stories, max_bytes=64 << 20)
    settings = GenerationSettings(max_tokens=20, temperature=0.0, logprobs=0)
    stream = generate_tokens(stories, ids, settings, prompt_cache=cache)
    first = [next(stream).token for _ in range(3)]
    stream.close()  # cancelled mid-decode
    (key,) = cache.keys()
    assert list(key[: len(ids)]) == ids and list(key[len(ids) :]) == first[: len(key) - len(ids)]
    longer = [*key, 42]
    assert cache.lookup(longer).tokens == len(key)
    assert_same(run(stories, longer, settings), run(stories, longer, settings, cache))


def test_cold_equals_warm_on_smollm2_chat():
    model = mlx_gen.load()
    cache = PrefixCache(model, max_bytes=256 << 20)
    system = {"role": "system", "content": "You are a terse assistant. Answer in one line."}
    messages = [system, {"role": "user", "content": "Name a colour."}]
    for _turn in range(3):
        ids = model.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        cold, warm = run(model, ids), run(model, ids, cache=cache)
        assert_same(cold, warm)
        reply = model.tokenizer.decode(warm[0])
        messages += [
            {"role": "assistant", "content": reply},
            {"role": "user", "content": "Another."},
        ]
    assert cache.stats.hits == 2 and cache.stats.cached_tokens > 40


def test_speculative_and_structured_paths_use_the_cache(stories):
    ids = stories.tokenizer.encode(STORY + " with her dog. She loved to play")
    cache = PrefixCache(stories, max_bytes=64 << 20)
    spec = GenerationSettings(max_tokens=8, temperature=0.0, speculative=PromptLookup())
    cold = [t.token for t in mlx_gen.speculative_generate_tokens(stories, ids, spec)]
    for _ in range(2):
        warm = list(mlx_gen.speculative_generate_tokens(stories, ids, spec, prompt_cache=cache))
        assert [t.token for t in warm] == cold
    assert cache.stats.hits == 1
    choose = GenerationSettings(max_tokens=8, temperature=0.0, constraint=Choice(["yes", "no"]))
    cold = [t.token for t in generate_tokens(stories, ids, choose)]
    assert [t.token for t in generate_tokens(stories, ids, choose, prompt_cache=cache)] == cold
    assert cache.stats.hits == 2
