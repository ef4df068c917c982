"""Token ids and prompt lengths are checked once, at the engine's boundary.

The reproductions run on stories260K (vocabulary 512, context 512): before these
checks ``generate(model, [1, 99999])`` crashed the process (SIGSEGV) and ids 512, 600,
5000 and -5 were silently accepted everywhere.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import mlx_gen as mg
from mlx_gen.validation import check_fits, context_length, room, token_ids
from tests.conftest import STORIES

S = mg.GenerationSettings
BAD = [99999, 512, 600, 5000, -5]


@pytest.fixture(scope="module")
def stories() -> mg.LoadedModel:
    if not (STORIES / "config.json").exists():
        pytest.skip(f"{STORIES} is absent")
    return mg.load(STORIES)


def _message(bad: int, position: int, what: str = "prompt") -> str:
    return rf"{what}\[{position}\]={bad} is outside the vocabulary \(size 512; valid ids: 0..511\)"


def test_token_ids_names_value_position_and_size():
    assert token_ids([0, 511], 512) == [0, 511]
    for bad in (2.5, True, "3", None):
        with pytest.raises(ValueError, match=r"prompt\[1\]=.* is not a token id"):
            token_ids([1, bad], 512)
    with pytest.raises(ValueError, match=_message(-5, 2)):
        token_ids([1, 2, -5], 512)


@pytest.mark.parametrize("bad", BAD)
def test_every_entry_point_refuses_an_id_outside_the_vocabulary(stories, bad):
    one = S(max_tokens=2)
    calls = {
        "generate": lambda: mg.generate(stories, [1, bad], settings=one),
        "generate_tokens": lambda: list(mg.generate_tokens(stories, [1, bad], one)),
        "stream_generate": lambda: list(mg.stream_generate(stories, [1, bad], settings=one)),
        "next_token_distribution": lambda: mg.next_token_distribution(stories, [1, bad]),
    }
    for call in calls.values():
        with pytest.raises(ValueError, match=_message(bad, 1)):
            call()
    with pytest.raises(ValueError, match=r"prompts\[1\]: " + _message(bad, 1)):
        mg.generate_batch(stories, [[1, 2], [1, bad]], settings=one)
    with pytest.raises(ValueError, match=r"prompts\[0\]: " + _message(bad, 1)):
        list(mg.stream_generate_batch(stories, [[1, bad]], settings=one))
    with pytest.raises(ValueError, match=_message(bad, 1, "continuation")):
        mg.score(stories, [1, 2], [3, bad])
    with pytest.raises(ValueError, match=_message(bad, 0)):
        mg.score(stories, [bad], [3])
    with pytest.raises(ValueError, match=r"pairs\[1\]: " + _message(bad, 0, "continuation")):
        mg.score_batch(stories, [([1], [2]), ([1], [bad])])


def test_a_valid_id_next_to_the_edge_still_works(stories):
    result = mg.generate(stories, [1, 511], settings=S(max_tokens=2, ignore_eos=True))
    assert len(result.token_ids) == 2


def test_the_segfault_repro_is_a_clean_error_in_a_subprocess():
    # Before: rc -11 (SIGSEGV) reading row 99999 of a 512-row embedding.
    if not (STORIES / "config.json").exists():
        pytest.skip(f"{STORIES} is absent")
    code = (
        "import mlx_gen as mg\n"
        f"m = mg.load({str(STORIES)!r})\n"
        "try:\n"
        "    mg.generate(m, [1, 99999])\n"
        "except ValueError as e:\n"
        "    print('refused:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "refused: prompt[1]=99999 is outside the vocabulary (size 512" in out.stdout


def test_context_length_comes_from_the_config():
    assert context_length({"max_position_embeddings": 512}) == 512
    assert context_length({"text_config": {"max_position_embeddings": 64}}) == 64
    assert context_length({"vocab_size": 3}) is None
    assert room(500, 512, 100) == 12 and room(10, None, 100) == 100
    check_fits(511, 512)
    with pytest.raises(ValueError, match="has 512 tokens, but the model's context is 512"):
        check_fits(512, 512)
    check_fits(512, 512, generating=False)


def test_a_prompt_longer_than_the_context_is_refused_before_prefill(stories):
    calls = []
    prompt = [1] + [300] * 600
    with pytest.raises(ValueError, match="has 601 tokens, but the model's context is 512"):
        mg.generate(stories, prompt, on_prefill=lambda done, total: calls.append(done))
    assert calls == []  # nothing was prefilled
    with pytest.raises(ValueError, match="has 601 tokens"):
        mg.next_token_distribution(stories, prompt)
    with pytest.raises(ValueError, match=r"prompts\[0\]: the prompt has 601 tokens"):
        mg.generate_batch(stories, [prompt])
    with pytest.raises(ValueError, match="prompt \\+ continuation has 602 tokens"):
        mg.score(stories, prompt, [5])


def test_max_tokens_is_clamped_to_the_context(stories):
    # Prompt + generated never exceed the 512-token context: 500 + 12, finishing "length".
    prompt = [1] + [300] * 499
    settings = S(max_tokens=100, ignore_eos=True)
    result = mg.generate(stories, prompt, settings=settings)
    assert (len(result.token_ids), result.finish_reason) == (12, "length")
    [batched] = mg.generate_batch(stories, [prompt], settings=settings)
    assert batched.token_ids == result.token_ids and batched.finish_reason == "length"


def test_count_arguments_take_ints_in_range(stories):
    cases = [
        (lambda: mg.score(stories, [1], [2], top_n=2.5), "top_n=2.5 is invalid"),
        (lambda: mg.score(stories, [1], [2], token_ids=["7"]), r"token_ids\[0\]='7' is not"),
        (lambda: mg.score(stories, [1], [2], chunk_size=0), "chunk_size=0 is invalid"),
        (lambda: mg.score_batch(stories, [([1], [2])], top_n=513), r"expected an int in 0..512"),
        (lambda: mg.score_batch(stories, [([1], [2])], batch_size=1.5), "batch_size=1.5"),
        (lambda: mg.next_token_distribution(stories, [1], top_n=-1), "top_n=-1 is invalid"),
        (lambda: mg.generate_batch(stories, [[1]], batch_size=True), "batch_size=True"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


def test_text_that_was_not_utf8_is_named_not_a_tokenizer_type_error(stories):
    # Before: TypeError "TextEncodeInput must be Union[...]" from the tokenizer.
    one = S(max_tokens=2)
    with pytest.raises(ValueError, match=r"^prompt is not valid text: a lone surrogate"):
        mg.generate(stories, "ab\udcff", settings=one)
    with pytest.raises(ValueError, match=r"^continuation is not valid text"):
        mg.score(stories, "ab", "c\udcff")
    with pytest.raises(ValueError, match=r"^bad_words is not valid text"):
        mg.generate(stories, "ab", settings=S(max_tokens=2, bad_words=["x\udcff"]))


def test_a_gguf_file_gives_its_context_length(default_model_file):
    # SmolLM2's GGUF header: llama.context_length = 8192 (stored as max_position_embeddings).
    model = mg.load(default_model_file)
    assert context_length(model.config) == 8192
    with pytest.raises(ValueError, match="has 8192 tokens, but the model's context is 8192"):
        mg.next_token_distribution(model, [1] * 8192)


def test_truncate_prompt_keeps_the_last_tokens_only_when_asked(stories):
    prompt = [1] + [300, 301, 302] * 200  # 601 tokens: refused without truncation
    settings = S(max_tokens=3, ignore_eos=True, truncate_prompt=500)
    alone = mg.generate(stories, prompt[-500:], settings=S(max_tokens=3, ignore_eos=True))
    result = mg.generate(stories, prompt, settings=settings)
    assert result.token_ids == alone.token_ids and result.stats.prompt_tokens == 500
    [batched] = mg.generate_batch(stories, [prompt], settings=settings)
    assert batched.token_ids == alone.token_ids
    dist = mg.next_token_distribution(stories, prompt, settings=settings)
    assert dist.top == mg.next_token_distribution(stories, prompt[-500:]).top
    with pytest.raises(ValueError, match="truncate_prompt=0 is invalid"):
        S(truncate_prompt=0)


def test_truncate_prompt_flag(stories, capsys):
    from mlx_gen.cli.main import main

    args = ["--model", str(STORIES), "--prompt", "Once upon a time", "--max-tokens", "3"]
    assert main([*args, "--truncate-prompt", "2", "--json", "--ignore-eos"]) == 0
    doc = json.loads(capsys.readouterr().out)
    ids = stories.tokenizer.encode("Once upon a time")[-2:]
    expected = mg.generate(stories, ids, settings=S(max_tokens=3, ignore_eos=True))
    assert doc["usage"]["prompt_tokens"] == 2 and doc["token_ids"] == expected.token_ids
