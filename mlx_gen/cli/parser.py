"""The ``mlx-gen`` argument parser: flags, groups and value types.

Each value type raises ``argparse.ArgumentTypeError`` naming the value and what is
valid, and the parser turns every error into :class:`UsageError` instead of exiting.
:mod:`mlx_gen.cli.options` turns the parsed values into typed options.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from mlx_gen.loading.load_flags import add_load_flags

LOGPROB_MODES = {"raw": ("raw",), "processed": ("processed",), "both": ("raw", "processed")}


class UsageError(ValueError):
    """A bad command line; the message names the flag, the value and what is valid."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises :class:`UsageError` instead of printing the usage and exiting."""

    def error(self, message: str) -> NoReturn:
        """Raise :class:`UsageError` with argparse's message (which names the flag)."""
        raise UsageError(message)

    def parse_args(self, args: Any = None, namespace: Any = None) -> argparse.Namespace:  # type: ignore[override]
        """Parse, first attaching dash-led values to their flag (``--logit-bias=-1:2``).

        argparse takes ``-1:2`` or ``-1e308`` for an unknown option and says only
        "expected one argument"; attached, the value reaches its type, whose error
        names it. A value that is itself a known flag is left alone.
        """
        argv = list(sys.argv[1:] if args is None else args)
        joined, i = [], 0
        while i < len(argv):
            action = self._option_string_actions.get(argv[i])
            value = argv[i + 1] if i + 1 < len(argv) else None
            if (
                action is not None
                and action.nargs is None
                and value is not None
                and value.startswith("-")
                and value != "--"
                and value not in self._option_string_actions
            ):
                joined.append(f"{argv[i]}={value}")
                i += 2
                continue
            if argv[i] == "--":
                joined += argv[i:]
                break
            joined.append(argv[i])
            i += 1
        return super().parse_args(joined, namespace)


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


_INT_MAX = 2**31 - 1  # GenerationSettings' bound on counts (mlx_gen.setting_types)
_NON_NEGATIVE = _ranged(int, lambda v: 0 <= v <= _INT_MAX, f"an int in 0..{_INT_MAX}")
_POSITIVE = _ranged(int, lambda v: 1 <= v <= _INT_MAX, f"an int in 1..{_INT_MAX}")
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
    add_load_flags(group)  # --dtype, --gguf-precision, --dequantize (shared with the server)
    source = group.add_mutually_exclusive_group()
    source.add_argument("--prompt", metavar="TEXT", help="the prompt text")
    source.add_argument("--prompt-file", metavar="PATH", help="read the prompt (- = stdin)")
    group.add_argument("--chat", action="store_true", help="apply the chat template to the prompt")
    group.add_argument("--system", metavar="TEXT", help="a system message (with --chat)")
    group.add_argument("--no-bos", action="store_true",
                       help="encode a plain prompt without special tokens (no BOS)")
    group.add_argument("--truncate-prompt", metavar="N", type=_POSITIVE,
                       help="keep only the last N prompt tokens (default: a prompt longer than "
                       "the model's context is refused)")
    group.add_argument("--batch-size", metavar="N", type=_POSITIVE,
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


def _add_structured_output(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("structured output", "At most one; the output is "
                                      "guaranteed to match it (see mlx_gen.cli.constraint_flags).")
    one = group.add_mutually_exclusive_group()
    one.add_argument("--json-schema", metavar="FILE|JSON", help="a JSON Schema (a file, or the "
                     "JSON text itself): the output is one JSON document valid under it")
    one.add_argument("--regex", metavar="PATTERN", help="the output matches PATTERN in full")
    one.add_argument("--grammar", metavar="FILE",
                     help="the output is a sentence of this Lark grammar (rule 'start')")
    one.add_argument("--choice", type=_non_empty, action="append", metavar="TEXT",
                     help="the output is one of the --choice texts (repeatable)")


def _add_speculative(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("speculative decoding", "Same output (greedy: the same "
                                      "tokens; sampled: the same distribution), every control "
                                      "applied, a constraint too; drafts only where the "
                                      "measured costs say it pays (-v shows the decision).")
    source = group.add_mutually_exclusive_group()
    source.add_argument("--prompt-lookup", type=_POSITIVE, metavar="N",
                        help="draft up to N tokens by n-gram lookup in the prompt and output")
    source.add_argument("--draft-model", metavar="PATH",
                        help="draft with this smaller model (same vocabulary; --model's sources)")
    group.add_argument("--num-draft", type=_POSITIVE, metavar="K",
                       help="tokens the --draft-model proposes per step (default 4)")


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
                _add_structured_output,
                _add_speculative, _add_inspection):  # fmt: skip
        add(parser)
    return parser
