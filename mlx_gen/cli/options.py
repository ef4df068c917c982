"""The command line's parser, and its translation into typed values for the public API.

:func:`parse_command_line` is the only code that sees the argparse namespace: it checks
the flags against each other and returns a frozen :class:`CliOptions` holding a
:class:`~mlx_gen.settings.GenerationSettings`. Every bad value raises
:class:`UsageError` (a ``ValueError``) whose message names the flag, the value and what
is valid. What needs the loaded model (vocabulary size, tokenizer) is finished in
:mod:`mlx_gen.cli.main`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mlx_gen.cli.constraint_flags import CONSTRAINT_FLAGS, constraint_from_flags
from mlx_gen.cli.input_text import check_text_flags
from mlx_gen.cli.parser import LOGPROB_MODES, UsageError, build_parser
from mlx_gen.drafters import PromptLookup
from mlx_gen.settings import GenerationSettings

# Flags that only change generation: --score rejects them rather than silently ignore them.
GENERATION_FLAGS = (
    "max_tokens", "temp", "top_k", "top_p", "min_p", "seed", "logit_bias", "logit_bias_text",
    "suppress_tokens", "begin_suppress_tokens", "begin_suppress_steps", "min_new_tokens",
    "repetition_penalty", "repetition_context_size", "presence_penalty", "frequency_penalty",
    "no_repeat_ngram_size", "bad_words", "eos_token_ids", "extra_eos_token_ids", "ignore_eos",
    "stop", "include_stop", "stream_logprobs", "prompt_lookup", "draft_model", "num_draft",
    "tools", "tool_choice", "max_thinking_tokens", "thinking_end_message", *CONSTRAINT_FLAGS,
)  # fmt: skip


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
        draft_model: ``--draft-model``'s source, loaded with the model (``None``: none).
        num_draft: ``--num-draft`` (``None``: the :class:`~mlx_gen.DraftModel` default).
        gguf_precision: ``load()``'s ``gguf_precision``.
        dequantize: ``load()``'s ``dequantize``.
        tools_file: ``--tools``: the file of tool definitions (``None``: no tools).
        tool_choice: ``--tool-choice`` as given.
        tool_format: ``--tool-format``.
        parallel_tool_calls: False with ``--no-parallel-tool-calls``.
        chat_template_kwargs: ``--chat-template-kwargs`` (JSON text) as given.
        show_prompt: Print the rendered prompt and exit.
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
    draft_model: str | None = None
    num_draft: int | None = None
    gguf_precision: str = "exact"
    dequantize: bool = False
    tools_file: str | None = None
    tool_choice: str | None = None
    tool_format: str | None = None
    parallel_tool_calls: bool = True
    chat_template_kwargs: str | None = None
    show_prompt: bool = False


# --- from the namespace to typed values ---

_REQUIRES = (  # (flag, needs, why)
    ("system", "chat", "a system message is part of a chat"),
    ("stream_logprobs", "logprobs", "it prints the --logprobs rows"),
    ("include_stop", "stop", "it keeps the matched --stop string"),
    ("batch_size", "prompt_file", "batch mode reads its prompts from a file"),
    ("output", "batch_size", "it receives the batch's JSONL results"),
    ("num_draft", "draft_model", "it is the --draft-model's draft length"),
    ("tools", "chat", "tools are declared to a chat template"),
    ("tool_choice", "tools", "it chooses among the --tools"),
    ("tool_format", "tools", "it is the syntax of the --tools calls"),
    ("no_parallel_tool_calls", "tools", "it limits the --tools calls"),
    ("chat_template_kwargs", "chat", "they are chat template variables"),
    ("thinking_end_message", "max_thinking_tokens", "it ends a budgeted think block"),
)
_CONFLICTS = (  # (flag, other, why)
    ("no_bos", "chat", "the chat template decides the special tokens"),
    ("ignore_eos", "eos_token_ids", "--ignore-eos turns EOS stopping off"),
    ("ignore_eos", "extra_eos_token_ids", "--ignore-eos turns EOS stopping off"),
    ("batch_size", "score", "batch mode generates"),
    ("batch_size", "stream_logprobs", "batch mode writes whole results"),
    ("batch_size", "tools", "batch mode does not parse tool calls"),
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
        speculative=PromptLookup(num_draft=v["prompt_lookup"]) if v["prompt_lookup"] else None,
        constraint=constraint_from_flags(v),
        truncate_prompt=v["truncate_prompt"],
        max_thinking_tokens=v["max_thinking_tokens"],
        thinking_end_message=v["thinking_end_message"] or "",
    )  # fmt: skip


def parse_command_line(argv: Sequence[str] | None = None) -> CliOptions:
    """Parse and check ``argv`` (``None``: ``sys.argv[1:]``).

    Returns:
        The typed options; the argparse namespace does not leave this module.

    Raises:
        UsageError: An unknown flag, a malformed or out-of-range value, text that is not
            UTF-8, a missing prompt, or flags that conflict (the message names them and
            what is valid).
        SystemExit: ``--help`` (status 0), after printing the help.
    """
    v = vars(build_parser().parse_args(argv))
    check_text_flags(v)  # invalid UTF-8 in argv: one error naming the flag
    _check_flags(v)
    return CliOptions(
        model=v["model"], dtype=v["dtype"], prompt=v["prompt"], prompt_file=v["prompt_file"],
        chat=v["chat"], system=v["system"], add_special_tokens=not v["no_bos"],
        settings=_settings(v), logit_bias_text=tuple(v["logit_bias_text"] or ()),
        score=v["score"], json=v["json"], stream_logprobs=v["stream_logprobs"],
        verbose=v["verbose"], batch_size=v["batch_size"], output=v["output"],
        draft_model=v["draft_model"], num_draft=v["num_draft"],
        gguf_precision=v["gguf_precision"], dequantize=v["dequantize"],
        tools_file=v["tools"], tool_choice=v["tool_choice"], tool_format=v["tool_format"],
        parallel_tool_calls=not v["no_parallel_tool_calls"],
        chat_template_kwargs=v["chat_template_kwargs"], show_prompt=v["show_prompt"],
    )  # fmt: skip
