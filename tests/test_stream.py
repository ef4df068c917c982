"""Stop strings (any tokenization, hold-back, exclusion), criteria, streaming == generate."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

import mlx_gen as mg
from mlx_gen.stopping import StopStrings
from tests.scripted import script, scripted_model

S = mg.GenerationSettings
PROMPT = [5, 6, 7]


def feed_all(stops, pieces, include=False):
    matcher = StopStrings(stops, include_stop_str=include)
    out = "".join(matcher.feed(p) for p in pieces) + matcher.flush()
    return out, matcher.matched


@given(st.text(alphabet="abST OP", max_size=30), st.lists(st.integers(1, 5), max_size=12))
def test_stop_strings_independent_of_how_text_is_split(text, cuts):
    pieces, i = [], 0
    for c in cuts:
        pieces.append(text[i : i + c])
        i += c
    pieces.append(text[i:])
    whole = feed_all(["STOP", "aa"], [text])
    assert feed_all(["STOP", "aa"], pieces) == whole
    first = (
        min((text.find(s), s) for s in ["STOP", "aa"] if s in text)
        if any(s in text for s in ["STOP", "aa"])
        else None
    )
    assert whole == ((text[: first[0]], first[1]) if first else (text, None))


def test_partial_stop_is_held_back_then_released():
    matcher = StopStrings(["STOP"])
    assert matcher.feed("go ST") == "go "
    assert matcher.feed("ill") == "STill"
    assert feed_all(["STOP"], ["a S", "TOP b"], include=True) == ("a STOP", "STOP")


def tokens_of(model, text, char_by_char=False):
    tok = model.tokenizer
    if char_by_char:
        return [tok.encode(c, add_special_tokens=False)[0] for c in text]
    return tok.encode(text, add_special_tokens=False)


def test_stop_string_matches_any_tokenization(tmp_path):
    probe = scripted_model(tmp_path, script(3, [20]))
    for char_by_char in (False, True):
        ids = tokens_of(probe, "the word STOP and more", char_by_char)
        model = scripted_model(tmp_path, script(3, ids))
        out = mg.generate(model, PROMPT, settings=S(max_tokens=40, stop=["STOP"]))
        assert (out.text, out.finish_reason, out.matched) == ("the word ", "stop_string", "STOP")
        kept = mg.generate(
            model, PROMPT, settings=S(max_tokens=40, stop=["STOP"], include_stop_str=True)
        )
        assert kept.text == "the word STOP"


def test_stream_equals_generate_and_holds_back(tmp_path):
    probe = scripted_model(tmp_path, script(3, [20]))
    ids = tokens_of(probe, "abc ST xyz STOP tail", char_by_char=True)
    model = scripted_model(tmp_path, script(3, ids))
    settings = S(max_tokens=40, stop=["STOP"])
    chunks = list(mg.stream_generate(model, PROMPT, settings=settings))
    assert "".join(c.text for c in chunks) == mg.generate(model, PROMPT, settings=settings).text
    assert "".join(c.text for c in chunks) == "abc ST xyz "
    assert all("STOP" not in c.text and c.text != "S" for c in chunks)
    assert chunks[-1].finish_reason == "stop_string" and chunks[-1].stats is not None


def test_multibyte_characters_stream_whole(tmp_path):
    probe = scripted_model(tmp_path, script(3, [20]))
    text = "é😀ü"
    ids = tokens_of(probe, text)
    assert len(ids) > 3  # byte-level: several tokens per character
    model = scripted_model(tmp_path, script(3, ids), eos_token_ids=())
    chunks = list(mg.stream_generate(model, PROMPT, settings=S(max_tokens=len(ids))))
    assert all("\ufffd" not in c.text for c in chunks)
    assert "".join(c.text for c in chunks) == text


def test_custom_criterion_stops(tmp_path):
    model = scripted_model(tmp_path, script(3, [20, 21, 22, 23, 24]))
    seen = []

    def three(ctx):
        seen.append((ctx.step, list(ctx.prompt_ids)))
        return ctx.step >= 3

    out = mg.generate(model, PROMPT, settings=S(max_tokens=10, stopping_criteria=[three]))
    assert (out.token_ids, out.finish_reason) == ([20, 21, 22], "criterion")
    assert seen == [(1, PROMPT), (2, PROMPT), (3, PROMPT)]


def test_streamed_text_equals_decode_including_leading_space(tmp_path):
    # mlx-lm's BPE detokenizer drops the first token's leading space; decode keeps it.
    probe = scripted_model(tmp_path, script(3, [20]))
    ids = tokens_of(probe, " there was a word")
    model = scripted_model(tmp_path, script(3, ids))
    out = mg.generate(model, PROMPT, settings=S(max_tokens=len(ids)))
    assert out.text == model.tokenizer.decode(ids) == " there was a word"
