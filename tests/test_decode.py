"""Loop semantics on a scripted model: steps, EOS sets, processor context, seeds, caches."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

import mlx_gen as mg
from tests.scripted import script, scripted_model

PROMPT = [5, 6, 7]
S = mg.GenerationSettings


def recorder():
    calls = []

    def processor(logits, ctx):
        calls.append((ctx.step, ctx.prompt_ids, ctx.generated_ids))
        return logits

    return processor, calls


@pytest.mark.parametrize("eos", [40, 41, 42])
def test_each_of_three_eos_ids_alone_stops(tmp_path, eos):
    # mlx-examples#1139 honoured only the last of Llama 3.1's three EOS ids.
    model = scripted_model(tmp_path, script(3, [20, 21, eos, 30, 31]), eos_token_ids=(40, 41, 42))
    result = mg.generate(model, PROMPT, settings=S(max_tokens=10))
    assert result.token_ids == [20, 21, eos]
    assert (result.finish_reason, result.matched) == ("stop", eos)
    assert result.text == model.tokenizer.decode([20, 21])  # EOS never rendered


def test_eos_ids_in_prompt_are_never_checked(tmp_path):
    model = scripted_model(tmp_path, script(3, [20, 21, 22]), eos_token_ids=(5, 6, 7))
    assert mg.generate(model, PROMPT, settings=S(max_tokens=3)).finish_reason == "length"


def test_eos_replace_extend_and_ignore(tmp_path):
    model = scripted_model(tmp_path, script(3, [20, 21, 22, 23]), eos_token_ids=(22,))
    assert mg.generate(model, PROMPT, settings=S(max_tokens=9)).token_ids == [20, 21, 22]
    assert mg.generate(model, PROMPT, settings=S(max_tokens=9, eos_token_ids=[21])).token_ids == [
        20,
        21,
    ]
    assert mg.generate(
        model, PROMPT, settings=S(max_tokens=9, extra_eos_token_ids=[20])
    ).token_ids == [20]
    out = mg.generate(model, PROMPT, settings=S(max_tokens=4, ignore_eos=True))
    assert (out.token_ids, out.finish_reason) == ([20, 21, 22, 23], "length")


def test_processors_called_once_per_step_never_past_max_tokens(tmp_path):
    model = scripted_model(tmp_path, script(3, [20, 21, 22, 23, 24, 25, 26]))
    processor, calls = recorder()
    mg.generate(model, PROMPT, settings=S(max_tokens=5, logits_processors=[processor]))
    assert [c[0] for c in calls] == [0, 1, 2, 3, 4]  # mlx-lm: max_tokens + 1 calls
    for step, prompt, generated in calls:
        assert prompt.tolist() == PROMPT
        assert generated.tolist() == [20, 21, 22, 23, 24][:step]


def test_lookahead_after_eos_is_discarded(tmp_path):
    model = scripted_model(tmp_path, script(3, [20, 21, 9, 30]), eos_token_ids=(9,))
    processor, calls = recorder()
    out = mg.generate(model, PROMPT, settings=S(max_tokens=50, logits_processors=[processor]))
    assert out.token_ids == [20, 21, 9]
    assert [c[0] for c in calls] == [0, 1, 2, 3]  # step 3 was queued, then discarded


def test_max_tokens_zero_generates_nothing(tmp_path):
    model = scripted_model(tmp_path, script(3, [20]))
    out = mg.generate(model, PROMPT, settings=S(max_tokens=0))
    assert (out.token_ids, out.text, out.finish_reason) == ([], "", "length")


def test_bias_changes_greedy_and_sampled_output(tmp_path):
    model = scripted_model(tmp_path, script(3, [20, 21, 22, 23]))
    plain = mg.generate(model, PROMPT, settings=S(max_tokens=4)).token_ids
    forced = mg.generate(model, PROMPT, settings=S(max_tokens=4, logit_bias={77: float("inf")}))
    assert plain == [20, 21, 22, 23] and forced.token_ids == [77] * 4
    banned = mg.generate(model, PROMPT, settings=S(max_tokens=4, logit_bias={21: -float("inf")}))
    assert 21 not in banned.token_ids and banned.token_ids[0] == 20
    for seed in range(5):
        sampled = mg.generate(
            model,
            PROMPT,
            settings=S(max_tokens=4, temperature=1.5, seed=seed, logit_bias={77: float("inf")}),
        )
        assert sampled.token_ids == [77] * 4
        no20 = mg.generate(
            model,
            PROMPT,
            settings=S(max_tokens=8, temperature=5.0, seed=seed, logit_bias={20: -float("inf")}),
        )
        assert 20 not in no20.token_ids


def test_generation_config_suppression_applies_without_caller(tmp_path):
    model = scripted_model(
        tmp_path, script(3, [20, 20, 21, 21]), suppress_tokens=(21,), begin_suppress_tokens=(20,)
    )
    out = mg.generate(model, PROMPT, settings=S(max_tokens=4)).token_ids
    assert out[0] != 20 and out[1] == 20 and 21 not in out
    wider = mg.generate(model, PROMPT, settings=S(max_tokens=4, begin_suppress_steps=2)).token_ids
    assert 20 not in wider[:2]
    off = mg.generate(
        model, PROMPT, settings=S(max_tokens=4, suppress_tokens=(), begin_suppress_tokens=())
    ).token_ids
    assert off == [20, 20, 21, 21]


def test_min_new_tokens_holds_back_every_eos(tmp_path):
    table = script(3, [40, 41, 42, 41, 40, 20])
    for i in range(2, 8):  # make all three EOS ids very likely everywhere
        table[i, [40, 41, 42]] = table[i].max() + np.array([3.0, 2.0, 1.0])
    model = scripted_model(tmp_path, table, eos_token_ids=(40, 41, 42))
    out = mg.generate(model, PROMPT, settings=S(max_tokens=10, min_new_tokens=3))
    assert len(out.token_ids) == 4 and not set(out.token_ids[:3]) & {40, 41, 42}
    assert out.finish_reason == "stop"


def test_same_seed_same_tokens_and_no_global_rng(tmp_path):
    model = scripted_model(tmp_path, script(3, [20] * 30, seed=1) * 0.1)
    settings = S(max_tokens=20, temperature=1.0, seed=123, ignore_eos=True)
    first = mg.generate(model, PROMPT, settings=settings).token_ids
    mx.random.seed(999)  # global state must not matter
    assert mg.generate(model, PROMPT, settings=settings).token_ids == first
    other = mg.generate(
        model, PROMPT, settings=S(max_tokens=20, temperature=1.0, seed=124, ignore_eos=True)
    ).token_ids
    assert other != first


def test_prompt_cache_reuse_keeps_whole_prompt_visible(tmp_path):
    model = scripted_model(tmp_path, script(6, [20, 21, 22]))
    cache = mg.PromptCache(model.model)
    processor, calls = recorder()
    settings = S(max_tokens=2, logits_processors=[processor])
    first = mg.generate(model, [1, 2, 3, 4, 5, 6], settings=settings, prompt_cache=cache)
    fed_before = len(model.model.fed)
    second = mg.generate(model, [1, 2, 3, 4, 5, 6], settings=settings, prompt_cache=cache)
    assert first.token_ids == second.token_ids == [20, 21]
    assert calls[-1][1].tolist() == [1, 2, 3, 4, 5, 6]  # processors see the cached part too
    # The second call fed only the last prompt token, then one decode step.
    assert [x.shape[1] for x in model.model.fed[fed_before:]] == [1, 1]


def test_custom_processor_first_token_without_prompt_length(tmp_path):
    """A "no digit first" processor works after multi-turn chats of any length (ctx.step)."""
    probe = scripted_model(tmp_path, script(3, [20]))
    tok = probe.tokenizer
    seven = tok.encode("7", add_special_tokens=False)[0]
    digits = [i for i in range(probe.vocab_size) if tok.decode([i]).strip().isdigit()]
    assert seven in digits

    def no_digit_first(logits, ctx):
        return logits.at[:, mx.array(digits)].add(-mx.inf) if ctx.step == 0 else logits

    short = [{"role": "user", "content": "how many?"}]
    long = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "1"},
        {"role": "user", "content": "and two more?"},
    ]
    for chat in (short, long):
        n = len(tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=True))
        model = scripted_model(tmp_path, script(n, [seven, seven, 21], length=n + 8))
        plain = mg.generate(model, messages=chat, settings=S(max_tokens=3)).token_ids
        assert plain == [seven, seven, 21]
        out = mg.generate(
            model, messages=chat, settings=S(max_tokens=3, logits_processors=[no_digit_first])
        )
        assert out.token_ids[0] not in digits
        assert out.token_ids[1] == seven  # only the first generated position is affected


def test_invalid_ids_and_settings_are_named(tmp_path):
    model = scripted_model(tmp_path, script(3, [20]))
    with pytest.raises(ValueError, match="999"):
        mg.generate(model, PROMPT, settings=S(logit_bias={999: 1.0}))
    with pytest.raises(ValueError, match="top_p=2"):
        mg.generate(model, PROMPT, settings=S(temperature=1.0, top_p=2.0))
    with pytest.raises(ValueError, match="logprobs_modes"):
        S(logprobs_modes=("cooked",))
    with pytest.raises(ValueError, match="empty"):
        mg.generate(model, [], settings=S())


def test_importing_the_cli_module_keeps_generate_callable(tmp_path):
    import importlib

    module = importlib.import_module("mlx_gen.generate")  # what `python -m` imports
    model = scripted_model(tmp_path, script(3, [20, 21]))
    assert mg.generate(model, PROMPT, settings=S(max_tokens=2)).token_ids == [20, 21]
    assert module(model, PROMPT, settings=S(max_tokens=1)).token_ids == [20]


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5])
def test_bad_seed_is_named(seed):
    with pytest.raises(ValueError, match="seed="):
        S(seed=seed)
