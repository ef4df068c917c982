"""The ``mlx-gen`` command line (also ``python -m mlx_gen.generate``).

It parses the flags (:mod:`mlx_gen.cli.options`), calls the public API, and prints
(:mod:`mlx_gen.cli.output`): generated text streams to stdout as it becomes final,
the ``--logprobs`` table follows it after a blank line, ``--json`` replaces both with
one JSON document, and ``--verbose`` diagnostics, the prefill progress line and
``--stream-logprobs`` rows go to stderr.

Exit status: 0 on success; 1 when generation ended with ``no_allowed_token`` (one
line on stderr says why; what was generated before is printed); 2 on bad input (one
``error: ...`` line on stderr, no traceback); 130 after Ctrl-C (what was printed
stays; ``interrupted`` on stderr; with ``--json`` the document of what was generated
is printed, ``finish_reason`` ``"interrupted"``); 141 when stdout is a closed pipe
(``| head``), silently. Model text written to a terminal has its control characters
escaped (:mod:`mlx_gen.cli.terminal`).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, TextIO

import mlx_gen as mg
from mlx_gen.cli.batch_io import (
    name_the_line,
    read_prompt_file,
    settings_for_requests,
    write_jsonl_results,
)
from mlx_gen.cli.input_text import read_text
from mlx_gen.cli.model_settings import settings_for_model
from mlx_gen.cli.options import CliOptions, UsageError, parse_command_line
from mlx_gen.cli.output import (
    constraint_note,
    generation_json,
    logprob_line,
    logprob_table,
    logprob_tables,
    no_token_note,
    score_json,
    score_total,
)
from mlx_gen.cli.ranks import error_line, silenced, yield_to_rank0
from mlx_gen.cli.streams import check_output_path, check_stdout, quiet_stdout
from mlx_gen.cli.terminal import for_terminal
from mlx_gen.cli.verbose import PrefillProgress, call_lines, defaults_lines, stats_lines
from mlx_gen.loading.distributed import ShardingError
from mlx_gen.prompts import encode_prompt
from mlx_gen.quiet_libraries import quiet_libraries
from mlx_gen.validation import truncated


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on ``argv`` (``None``: ``sys.argv[1:]``); return the exit status.

    Libraries' own warnings are off meanwhile (:func:`quiet_libraries`): stderr holds
    mlx-gen's lines only.
    """
    with quiet_libraries():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    try:
        return _run(parse_command_line(argv))
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else 0
    except BrokenPipeError:  # `| head` closed stdout: stop quietly, as other tools do
        quiet_stdout()
        return 141
    except KeyboardInterrupt:
        if sys.stdout is not None:  # None: started with stdout closed
            sys.stdout.flush()
        sys.stderr.write("\ninterrupted\n")
        return 130
    except (ValueError, OSError) as e:
        if sys.stdout is not None:  # None: started with stdout closed
            sys.stdout.flush()
        same_everywhere = isinstance(e, (UsageError, ShardingError))  # rank 0 prints it
        line = error_line(e, usage=same_everywhere)  # else one per rank that failed
        if line is not None:
            print(line, file=sys.stderr)
        else:
            yield_to_rank0()  # a follower's usage error: rank 0 reports it
        return 2


def _run(options: CliOptions) -> int:
    check_stdout(options.output)
    if options.output is not None:
        check_output_path(options.output)  # before loading and generating, not after
    model = mg.load(
        options.model,
        dtype=options.dtype,
        gguf_precision=options.gguf_precision,
        dequantize=options.dequantize,
    )
    if model.rank != 0:  # under mlx.launch, the other ranks compute and print nothing
        with silenced(model.rank):
            return _run_model(model, replace(options, output=None))
    return _run_model(model, options)


def _run_model(model: mg.LoadedModel, options: CliOptions) -> int:
    settings = settings_for_model(options, model)
    if options.batch_size is not None:
        return _batch(model, settings, options)
    prompt_ids = truncated(_prompt_ids(options, model), settings.truncate_prompt)
    if options.verbose:
        _lines(sys.stderr, defaults_lines(model) + call_lines(model, settings))
    if options.score is not None:
        return _score(model, prompt_ids, options.score, settings, as_json=options.json)
    return _generate(model, prompt_ids, settings, options)


def _prompt_ids(options: CliOptions, model: mg.LoadedModel) -> list[int]:
    text = options.prompt if options.prompt is not None else read_text(options.prompt_file or "-")
    if not options.chat:
        return encode_prompt(model.tokenizer, text, add_special_tokens=options.add_special_tokens)
    if not getattr(model.tokenizer, "chat_template", None):
        raise UsageError(
            "--chat needs a chat template, and this model's tokenizer has none "
            "(drop --chat to send the prompt as plain text)"
        )
    system = [{"role": "system", "content": options.system}] if options.system else []
    return encode_prompt(model.tokenizer, messages=[*system, {"role": "user", "content": text}])


# --- the two commands ---


def _generate(
    model: mg.LoadedModel,
    prompt_ids: list[int],
    settings: mg.GenerationSettings,
    options: CliOptions,
) -> int:
    decode = _decoder(model)
    chunks: list[mg.GenerationChunk] = []
    stream = mg.stream_generate(
        model, prompt_ids, settings=settings, on_prefill=PrefillProgress(len(prompt_ids))
    )

    def json_doc(result: mg.GenerationResult) -> dict[str, Any]:
        return generation_json(result, decode, len(prompt_ids), settings.logprobs is not None)

    try:
        for chunk in stream:
            chunks.append(chunk)
            if not options.json:
                _write(sys.stdout, for_terminal(sys.stdout, chunk.text))
            if options.stream_logprobs and chunk.logprobs:
                _write(sys.stderr, logprob_line(len(chunks) - 1, chunk.logprobs, decode) + "\n")
    except KeyboardInterrupt:
        if options.json:  # what was generated, rather than nothing
            partial = mg.GenerationResult.from_chunks(chunks, decode)
            _print_json(json_doc(replace(partial, finish_reason="interrupted")))
        raise
    result = mg.GenerationResult.from_chunks(chunks, decode)
    if options.json:
        _print_json(json_doc(result))
    else:
        _write(sys.stdout, "\n")
        if settings.logprobs is not None and not options.stream_logprobs:
            tables = logprob_tables(result.logprobs, settings.logprobs_modes, decode)
            _lines(sys.stdout, ["", tables])
    notes = [note for note in (constraint_note(result), no_token_note(result)) if note]
    _lines(sys.stderr, notes)
    if options.verbose:
        _lines(sys.stderr, stats_lines(result.stats, result.finish_reason, result.matched, decode))
    return 1 if no_token_note(result) else 0


def _batch(model: mg.LoadedModel, settings: mg.GenerationSettings, options: CliOptions) -> int:
    """``--batch-size``: every prompt of the file, ``batch_size`` at a time; JSONL out."""
    requests = read_prompt_file(
        options.prompt_file or "-", chat=options.chat, system=options.system
    )
    per_row = settings_for_requests(settings, requests)
    try:
        results = mg.generate_batch(
            model,
            [r.prompt for r in requests],
            per_prompt_settings=per_row,
            batch_size=options.batch_size,
            add_special_tokens=options.add_special_tokens,
        )
    except ValueError as err:  # "prompts[i]: ..." → "FILE:LINE: ..."
        raise ValueError(name_the_line(err, requests)) from None
    write_jsonl_results(
        options.output or "-",
        results,
        decode=_decoder(model),
        logprobs=[s.logprobs is not None for s in per_row],
    )
    return 0


def _score(
    model: mg.LoadedModel,
    prompt_ids: list[int],
    text: str,
    settings: mg.GenerationSettings,
    *,
    as_json: bool,
) -> int:
    if not model.tokenizer.encode(text, add_special_tokens=False):
        raise UsageError(
            f"argument --score: {text!r} encodes to no token (whitespace alone may), so there "
            "is nothing to score"
        )
    decode = _decoder(model)
    result = mg.score(
        model, prompt_ids, text, top_n=settings.logprobs or 0, token_ids=settings.logprob_token_ids
    )
    if as_json:
        _print_json(score_json(result, decode, len(prompt_ids)))
    else:
        _lines(sys.stdout, [logprob_table(result.logprobs, decode), "", score_total(result)])
    return 0


def _decoder(model: mg.LoadedModel) -> Any:
    """``decode(id) -> text`` of one token, cached (tables decode the same ids often)."""
    return functools.lru_cache(maxsize=None)(lambda i: model.tokenizer.decode([i]))


def _print_json(doc: dict[str, Any]) -> None:
    """One JSON document on one line (``-inf`` already written as null)."""
    text = json.dumps(doc, ensure_ascii=False, allow_nan=False)
    _write(sys.stdout, for_terminal(sys.stdout, text, json=True) + "\n")


def _write(stream: TextIO, text: str) -> None:
    stream.write(text)
    stream.flush()


def _lines(stream: TextIO, lines: Sequence[str]) -> None:
    _write(stream, "".join(line + "\n" for line in lines))
