"""The command line's parser, and its translation into typed values for the public API.

:func:`parse_command_line` is the only code that sees the argparse namespace: it checks
the flags against each other and returns a frozen :class:`CliOptions` holding a
:class:`~mlx_gen.settings.GenerationSettings`. Every bad value raises
:class:`UsageError` (a ``ValueError``) whose message names the flag, the value and what
is valid. What needs the loaded model (vocabulary size, tokenizer) is finished in
:mod:`mlx_gen.cli`.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from mlx_gen.settings import GenerationSettings

DTYPES = ("float16", "bfloat16", "float32")
LOGPROB_MODES = {"raw": ("raw",), "processed": ("processed",), "both": ("raw", "processed")}
# Flags that only change generation: --score rejects them rather than silently ignore them.
GENERATION_FLAGS = (
    "max_tokens", "temp", "top_k", "top_p", "min_p", "seed", "logit_bias", "logit_bias_text",
    "suppress_tokens", "begin_suppress_tokens", "begin_suppress_steps", "min_new_tokens",
    "repetition_penalty", "repetition_context_size", "presence_penalty", "frequency_penalty",
    "no_repeat_ngram_size", "bad_words", "eos_token_ids", "extra_eos_token_ids", "ignore_eos",
    "stop", "include_stop", "stream_logprobs",
)  # fmt: skip


class UsageError(ValueError):
    """A bad command line; the message names the flag, the value and what is valid."""


@dataclass(frozen=True)
class CliOptions:
    """One command line, parsed and checked.

    Attributes:
        model: The ``load()`` source (``None``: the embedded SmolLM2).
        dtype: ``load()``'s ``dtype``.
        prompt: The prompt text, or ``None`` when it comes from ``prompt_file``.
        prompt_file: A path, or ``"-"`` for stdin.
        chat: Send the prompt as a user message through the chat template.
        system: The system message (chat only).
        add_special_tokens: Add BOS when encoding a plain prompt.
        settings: The generation settings (``None`` fields: the model's defaults).
        logit_bias_text: ``(text, bias)`` pairs, turned into ids once the model is loaded.
        score: Score this text as the prompt's continuation instead of generating.
        json: Print one JSON document instead of streaming text.
        stream_logprobs: Print each token's logprob row on stderr as it comes.
        verbose: Print the resolved defaults and the stats on stderr.
        batch_size: Batch mode: prompts per batch (``prompt_file`` holds one per line).
        output: Batch mode: the JSONL results file (``None``: stdout).
    """

    model: str | None
    dtype: str | None
    prompt: str | None
    prompt_file: str | None
    chat: bool
    system: str | None
    add_special_tokens: bool
    settings: GenerationSettings
    logit_bias_text: tuple[tuple[str, float], ...]
    score: str | None
    json: bool
    stream_logprobs: bool
    verbose: bool
    batch_size: int | None = None
    output: str | None = None


class _Parser(argparse.ArgumentParser):
    """argparse that raises :class:`UsageError` instead of printing the usage and exiting."""

    def error(self, message: str) -> NoReturn:
        """Raise :class:`UsageError` with argparse's message (which names the flag)."""
        raise UsageError(message)


# --- value types: each raises ArgumentTypeError naming the value and what is valid ---


def _ranged(kind: type, ok: Callable[[Any], bool], valid: str) -> Callable[[str], Any]:
    """A type converting to ``kind`` and accepting values where ``ok(value)``."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = math.nan
        if math.isnan(value) or not ok(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {valid}")
        return value

    return parse


_NON_NEGATIVE = _ranged(int, lambda v: v >= 0, "an int >= 0")
_POSITIVE = _ranged(int, lambda v: v >= 1, "an int >= 1")
_FINITE = _ranged(float, math.isfinite, "a finite number")
_BIAS = _ranged(float, lambda v: True, "a number, -inf, inf or +inf")


def _token_id(text: str) -> int:
    return _ranged(int, lambda v: v >= 0, "a token id: an int >= 0")(text.strip())


def _id_list(text: str) -> tuple[int, ...]:
    """``"1,2,3"`` → ``(1, 2, 3)``; ``""`` → ``()`` (clears the model's default)."""
    return tuple(_token_id(part) for part in text.split(",") if part.strip())


def _pair(text: str, sep_at: int, key: Callable[[str], Any], example: str) -> tuple[Any, float]:
    """Parse ``KEY:BIAS`` split at the colon at ``sep_at``, naming the whole value on error."""
    head, tail = text[:sep_at], text[sep_at + 1 :]
    try:
        if sep_at < 0 or not head.strip():
            raise argparse.ArgumentTypeError(f"expected {example}")
        return key(head), _BIAS(tail)
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is invalid: {e}") from None


def _id_bias(text: str) -> tuple[int, float]:
    return _pair(text, text.find(":"), _token_id, "ID:BIAS, e.g. 42:-inf")


def _text_bias(text: str) -> tuple[str, float]:
    return _pair(text, text.rfind(":"), str, "TEXT:BIAS, e.g. Paris:5")


def _non_empty(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("'' is not allowed (expected non-empty text)")
    return text


# --- the parser, one function per flag family (hand-formatted: one flag, one entry) ---
# fmt: off

def _add_model_and_input(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model and input")
    group.add_argument("--model", help="a model folder, a Hub repo id or a .gguf file "
                       "(default: the embedded SmolLM2-135M-Instruct)")
    group.add_argument("--dtype", choices=DTYPES, help="cast floating weights (default: as stored)")
    source = group.add_mutually_exclusive_group()
    source.add_argument("--prompt", metavar="TEXT", help="the prompt text")
    source.add_argument("--prompt-file", metavar="PATH", help="read the prompt (- = stdin)")
    group.add_argument("--chat", action="store_true", help="apply the chat template to the prompt")
    group.add_argument("--system", metavar="TEXT", help="a system message (with --chat)")
    group.add_argument("--no-bos", action="store_true",
                       help="encode a plain prompt without special tokens (no BOS)")
    group.add_argument("--batch-size", metavar="N", type=_ranged(int, lambda v: v >= 1, "an int >= 1"),
                       help="batch mode: --prompt-file holds one prompt per line, or JSONL lines "
                       "({\"prompt\": ..., or \"messages\": ..., plus any setting}); N prompts run "
                       "together; one JSON result per line, in input order")
    group.add_argument("--output", metavar="PATH",
                       help="batch mode: write the JSONL results to PATH (default: stdout; an "
                       "existing file is not overwritten)")


def _add_sampling(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("sampling", "Unset options take the model's "
                                      "generation_config (see --verbose).")
    group.add_argument("--max-tokens", type=_NON_NEGATIVE, metavar="N",
                       help="generate at most N tokens (default: the model's, else 256)")
    group.add_argument("--temp", type=_ranged(float, lambda v: 0 <= v < math.inf,
                       "a finite number >= 0"), metavar="T", help="temperature (0: greedy)")
    group.add_argument("--top-k", type=_NON_NEGATIVE, metavar="K", help="keep K tokens (0: off)")
    group.add_argument("--top-p", type=_ranged(float, lambda v: 0 < v <= 1, "a number in (0, 1]"),
                       metavar="P", help="nucleus mass (1: off)")
    group.add_argument("--min-p", type=_ranged(float, lambda v: 0 <= v < 1, "a number in [0, 1)"),
                       metavar="P", help="drop tokens below P x the top probability (0: off)")
    group.add_argument("--seed", type=_ranged(int, lambda v: 0 <= v < 2**64, "an int in "
                       "[0, 2**64)"), help="seed of this call's private random key")


def _add_logit_control(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("logit control", "IDS is a comma-separated id list.")
    group.add_argument("--logit-bias", type=_id_bias, action="append", metavar="ID:BIAS",
                       help="add BIAS to ID's logit (not clamped); -inf bans, inf forces; "
                       "repeatable, the last value for an ID wins")
    group.add_argument("--logit-bias-text", type=_text_bias, action="append", metavar="TEXT:BIAS",
                       help="add BIAS to every token of 'TEXT' and ' TEXT' (no special tokens, "
                       "whitespace-only tokens skipped; --logit-bias wins for an id)")
    group.add_argument("--suppress-tokens", type=_id_list, metavar="IDS",
                       help="ban at every step ('' clears the model's list)")
    group.add_argument("--begin-suppress-tokens", type=_id_list, metavar="IDS",
                       help="ban at the first --begin-suppress-steps generated positions")
    group.add_argument("--begin-suppress-steps", type=_NON_NEGATIVE, metavar="N", help="default 1")
    group.add_argument("--min-new-tokens", type=_NON_NEGATIVE, metavar="N",
                       help="no EOS id before N tokens")
    group.add_argument("--repetition-penalty", type=_ranged(float, lambda v: 0 < v < math.inf,
                       "a number > 0"), metavar="X", help="HF penalty, prompt + generated (1: off)")
    group.add_argument("--repetition-context-size", type=_POSITIVE, metavar="N",
                       help="apply --repetition-penalty to the last N tokens only")
    group.add_argument("--presence-penalty", type=_FINITE, metavar="X",
                       help="subtract X from every token already generated (OpenAI)")
    group.add_argument("--frequency-penalty", type=_FINITE, metavar="X",
                       help="subtract X per earlier occurrence in the generated tokens (OpenAI)")
    group.add_argument("--no-repeat-ngram-size", type=_NON_NEGATIVE, metavar="N",
                       help="never repeat an n-gram of N tokens")
    group.add_argument("--bad-words", type=_non_empty, action="append", metavar="WORD",
                       help="never generate WORD, with or without a leading space (repeatable)")


def _add_stopping(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("stopping")
    group.add_argument("--eos-token-ids", type=_id_list, metavar="IDS", help="replace the EOS ids")
    group.add_argument("--extra-eos-token-ids", type=_id_list, metavar="IDS", help="add EOS ids")
    group.add_argument("--ignore-eos", action="store_true", help="do not stop at EOS ids")
    group.add_argument("--stop", type=_non_empty, action="append", metavar="TEXT",
                       help="stop when the text contains TEXT, however tokenized (repeatable)")
    group.add_argument("--include-stop", action="store_true", help="keep the matched stop string")


def _add_inspection(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("inspection and output")
    group.add_argument("--logprobs", type=_ranged(int, lambda v: 0 <= v <= 1000, "an int in "
                       "0..1000"), metavar="N", help="after the text, a table of each token's "
                       "logprob, probability, rank and top-N alternatives")
    group.add_argument("--stream-logprobs", action="store_true",
                       help="print the --logprobs rows live on stderr instead")
    group.add_argument("--logprobs-mode", choices=tuple(LOGPROB_MODES),
                       help="raw: the model's distribution (default); processed: the one "
                       "sampled from (after processors and filters); both")
    group.add_argument("--logprob-token-ids", type=_id_list, metavar="IDS",
                       help="also report these ids' logprobs (implies --logprobs 0)")
    group.add_argument("--score", type=_non_empty, metavar="TEXT",
                       help="score TEXT (encoded as given, no special tokens) as the prompt's "
                       "continuation instead of generating: the table and the total logprob")
    group.add_argument("--json", action="store_true",
                       help="print one JSON document on stdout instead of text (also with --score)")
    group.add_argument("-v", "--verbose", action="store_true",
                       help="print the resolved defaults (EOS ids with their sources) and the "
                       "stats on stderr")

# fmt: on


def build_parser() -> argparse.ArgumentParser:
    """The ``mlx-gen`` / ``python -m mlx_gen.generate`` argument parser."""
    parser = _Parser(
        prog="mlx-gen",
        allow_abbrev=False,
        description="Generate (or score) text with controlled, inspectable decoding on MLX.",
    )
    for add in (_add_model_and_input, _add_sampling, _add_logit_control, _add_stopping,
                _add_inspection):  # fmt: skip
        add(parser)
    return parser


# --- from the namespace to typed values ---

_REQUIRES = (  # (flag, needs, why)
    ("system", "chat", "a system message is part of a chat"),
    ("stream_logprobs", "logprobs", "it prints the --logprobs rows"),
    ("include_stop", "stop", "it keeps the matched --stop string"),
    ("batch_size", "prompt_file", "batch mode reads its prompts from a file"),
    ("output", "batch_size", "it receives the batch's JSONL results"),
)
_CONFLICTS = (  # (flag, other, why)
    ("no_bos", "chat", "the chat template decides the special tokens"),
    ("ignore_eos", "eos_token_ids", "--ignore-eos turns EOS stopping off"),
    ("ignore_eos", "extra_eos_token_ids", "--ignore-eos turns EOS stopping off"),
    ("batch_size", "score", "batch mode generates"),
    ("batch_size", "stream_logprobs", "batch mode writes whole results"),
)


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _given(value: Any) -> bool:
    return value is not None and value is not False


def _check_flags(values: dict[str, Any]) -> None:
    """Raise :class:`UsageError` for a missing prompt or flags that need or exclude others."""
    if values["prompt"] is None and values["prompt_file"] is None:
        raise UsageError("no prompt given: pass --prompt TEXT or --prompt-file PATH (- for stdin)")
    for flag, needs, why in _REQUIRES:
        if _given(values[flag]) and not _given(values[needs]):
            raise UsageError(f"{_flag(flag)} needs {_flag(needs)} ({why})")
    for flag, other, why in _CONFLICTS:
        if _given(values[flag]) and _given(values[other]):
            raise UsageError(f"{_flag(flag)} cannot be combined with {_flag(other)} ({why})")
    mode = values["logprobs_mode"]
    if values["score"] is not None:
        extra = [_flag(f) for f in GENERATION_FLAGS if _given(values[f])]
        if extra:
            raise UsageError(
                f"{', '.join(extra)} cannot be combined with --score (scoring reads the "
                "model's raw distribution and generates nothing)"
            )
        if mode not in (None, "raw"):
            raise UsageError(f"--logprobs-mode {mode!r} is invalid with --score (valid: raw)")
    elif mode is not None and values["logprobs"] is None:
        raise UsageError("--logprobs-mode needs --logprobs N (it chooses what the table shows)")


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def _settings(v: dict[str, Any]) -> GenerationSettings:
    """The :class:`GenerationSettings` of the parsed flags ``v`` (unset: ``None``)."""
    logprobs = v["logprobs"]
    if logprobs is None and (v["logprob_token_ids"] or v["score"] is not None):
        logprobs = 0
    return GenerationSettings(
        max_tokens=v["max_tokens"], temperature=v["temp"], top_k=v["top_k"],
        top_p=v["top_p"], min_p=v["min_p"], seed=v["seed"],
        logit_bias=dict(v["logit_bias"]) if v["logit_bias"] else None,
        suppress_tokens=v["suppress_tokens"], begin_suppress_tokens=v["begin_suppress_tokens"],
        begin_suppress_steps=_or(v["begin_suppress_steps"], 1),
        min_new_tokens=v["min_new_tokens"], repetition_penalty=v["repetition_penalty"],
        repetition_context_size=v["repetition_context_size"],
        presence_penalty=_or(v["presence_penalty"], 0.0),
        frequency_penalty=_or(v["frequency_penalty"], 0.0),
        no_repeat_ngram_size=v["no_repeat_ngram_size"], bad_words=tuple(v["bad_words"] or ()),
        eos_token_ids=v["eos_token_ids"], extra_eos_token_ids=v["extra_eos_token_ids"] or (),
        ignore_eos=v["ignore_eos"], stop=tuple(v["stop"] or ()),
        include_stop_str=v["include_stop"], logprobs=logprobs,
        logprob_token_ids=v["logprob_token_ids"] or (),
        logprobs_modes=LOGPROB_MODES[v["logprobs_mode"] or "raw"],
    )  # fmt: skip


def parse_command_line(argv: Sequence[str] | None = None) -> CliOptions:
    """Parse and check ``argv`` (``None``: ``sys.argv[1:]``).

    Returns:
        The typed options; the argparse namespace does not leave this module.

    Raises:
        UsageError: An unknown flag, a malformed or out-of-range value, a missing prompt,
            or flags that conflict (the message names them and what is valid).
        SystemExit: ``--help`` (status 0), after printing the help.
    """
    v = vars(build_parser().parse_args(argv))
    _check_flags(v)
    return CliOptions(
        model=v["model"], dtype=v["dtype"], prompt=v["prompt"], prompt_file=v["prompt_file"],
        chat=v["chat"], system=v["system"], add_special_tokens=not v["no_bos"],
        settings=_settings(v), logit_bias_text=tuple(v["logit_bias_text"] or ()),
        score=v["score"], json=v["json"], stream_logprobs=v["stream_logprobs"],
        verbose=v["verbose"], batch_size=v["batch_size"], output=v["output"],
    )  # fmt: skip
