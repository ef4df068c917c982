"""Files for batched generation: read a prompt file, write JSONL results in input order.

Prompt file formats (chosen by the first non-blank line, or a ``.jsonl`` suffix):

* Plain text: one prompt per line. Blank lines are skipped; a literal ``\\n`` is not
  unescaped (use JSONL for multi-line prompts).
* JSONL: one object per line with exactly one of ``"prompt"`` (text or a list of token
  ids) and ``"messages"`` (chat messages), plus optional per-line settings named like
  :class:`~mlx_gen.settings.GenerationSettings` fields, e.g.
  ``{"prompt": "Once", "max_tokens": 20, "temperature": 0.8, "seed": 3,
  "stop": ["."], "logit_bias": {"42": -100}}``. ``logit_bias`` keys may be strings
  (JSON object keys); ``sequence_bias`` is a list of ``[[ids...], bias]`` pairs.

Each result line is the ``--json`` document of :func:`mlx_gen.cli.output.generation_json`
with ``"index"`` (the prompt's position) added, and ``"speculation"`` (the row's
:class:`~mlx_gen.SpeculationStats`: drafts, acceptance, measured costs, the decision)
when it speculated (``--prompt-lookup`` / ``--draft-model``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, NamedTuple

from mlx_gen.batch.generation import BatchPrompt
from mlx_gen.cli.input_text import read_text
from mlx_gen.cli.output import generation_json
from mlx_gen.cli.terminal import for_terminal
from mlx_gen.generation import GenerationResult
from mlx_gen.prompts import check_messages
from mlx_gen.settings import GenerationSettings

# Settings a prompt file may set per line (callables cannot come from a file).
FILE_SETTINGS = tuple(
    f.name
    for f in fields(GenerationSettings)
    if f.name not in ("logits_processors", "stopping_criteria")
)


class PromptRequest(NamedTuple):
    """One prompt from a file, the settings its line overrides (``{}``: none), its line."""

    prompt: BatchPrompt
    overrides: dict[str, Any]
    where: str = ""  # ``path:line``, for errors found later


def name_the_line(err: ValueError, requests: Sequence[PromptRequest]) -> str:
    """``err``'s message with its ``prompts[i]: `` prefix replaced by the file's line.

    >>> name_the_line(ValueError("prompts[1]: bad id"), [PromptRequest("a", {}, "f:1"),
    ...                                                  PromptRequest("b", {}, "f:3")])
    'f:3: bad id'
    """
    message = str(err)
    match = re.match(r"prompts\[(\d+)\]: ", message)
    if match and int(match.group(1)) < len(requests) and requests[int(match.group(1))].where:
        return f"{requests[int(match.group(1))].where}: {message[match.end() :]}"
    return message


def _settings_overrides(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    unknown = sorted(set(raw) - set(FILE_SETTINGS))
    if unknown:
        raise ValueError(
            f"{where}: unknown setting(s) {unknown}; valid: {', '.join(FILE_SETTINGS)}"
        )
    out = dict(raw)
    try:
        if isinstance(out.get("logit_bias"), Mapping):
            out["logit_bias"] = {int(k): float(v) for k, v in out["logit_bias"].items()}
        if out.get("sequence_bias") is not None:
            out["sequence_bias"] = {
                tuple(int(i) for i in ids): float(b) for ids, b in out["sequence_bias"]
            }
        replace(GenerationSettings(), **out)  # Validate now, naming the line.
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {err}") from None
    return out


def _json_line(line: str, where: str, chat: Callable[[str], BatchPrompt]) -> PromptRequest:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: not valid JSON ({err.msg})") from None
    except RecursionError:
        raise ValueError(f"{where}: JSON nested too deeply") from None
    if not isinstance(obj, dict) or ("prompt" in obj) == ("messages" in obj):
        raise ValueError(f"{where}: expected an object with exactly one of 'prompt' and 'messages'")
    prompt = obj.pop("prompt", None)
    messages = obj.pop("messages", None)
    if messages is not None:
        if not isinstance(messages, list) or not messages:
            raise ValueError(f"{where}: 'messages' must be a non-empty list of messages")
        try:
            check_messages(messages)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        return PromptRequest(messages, _settings_overrides(obj, where), where)
    if isinstance(prompt, str):
        return PromptRequest(chat(prompt), _settings_overrides(obj, where), where)
    if isinstance(prompt, list) and prompt:  # ids are checked against the vocabulary later
        return PromptRequest(prompt, _settings_overrides(obj, where), where)
    raise ValueError(f"{where}: 'prompt' must be a non-empty string or list of token ids")


def read_prompt_file(
    path: str | os.PathLike[str], *, chat: bool = False, system: str | None = None
) -> list[PromptRequest]:
    """Read prompts (and per-line settings) from ``path`` (``"-"``: standard input).

    Args:
        path: A plain-text or JSONL prompt file (see the module doc).
        chat: Send each text prompt as a user message through the chat template.
        system: A system message put before each chat prompt.

    Returns:
        One :class:`PromptRequest` per prompt, in file order.

    Raises:
        ValueError: A malformed line, an unknown or invalid setting (``path:line``
            named), or a file without prompts; a file that cannot be read, is not UTF-8
            or is larger than ``MAX_INPUT_BYTES`` (a ``UsageError`` naming the path).
    """
    name = "<stdin>" if str(path) == "-" else str(path)
    text = read_text(str(path))  # UTF-8, at most MAX_INPUT_BYTES
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise ValueError(f"{name}: no prompts (the file is empty)")

    def as_prompt(value: str) -> BatchPrompt:
        if not chat:
            return value
        return [
            *([{"role": "system", "content": system}] if system else []),
            {"role": "user", "content": value},
        ]

    if name.endswith(".jsonl") or lines[0][1].lstrip().startswith("{"):
        return [_json_line(line, f"{name}:{n}", as_prompt) for n, line in lines]
    return [PromptRequest(as_prompt(line), {}, f"{name}:{n}") for n, line in lines]


def settings_for_requests(
    base: GenerationSettings, requests: Sequence[PromptRequest]
) -> list[GenerationSettings]:
    """``base`` with each line's overrides applied: the ``per_prompt_settings`` list."""
    return [replace(base, **r.overrides) if r.overrides else base for r in requests]


def write_jsonl_results(
    path: str | os.PathLike[str],
    results: Sequence[GenerationResult],
    *,
    decode: Callable[[int], str],
    logprobs: Sequence[bool] | bool = False,
    overwrite: bool = False,
) -> None:
    """Write one JSON line per result, in input order (``"-"``: standard output).

    The file is written to a temporary name next to ``path`` and renamed into place, so
    an interrupted run leaves no partial file and an old file intact.

    Args:
        path: The output file, or ``"-"``.
        results: :func:`~mlx_gen.batch.generation.generate_batch`'s results.
        decode: Token id to text (for logprob rows), e.g. ``lambda i: tok.decode([i])``.
        logprobs: Include logprobs, for all rows or per row.
        overwrite: Replace an existing file.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is false.
    """
    flags = [logprobs] * len(results) if isinstance(logprobs, bool) else list(logprobs)
    lines = []
    for index, (result, with_logprobs) in enumerate(zip(results, flags, strict=True)):
        prompt_tokens = result.stats.prompt_tokens if result.stats else None
        record = {"index": index, **generation_json(result, decode, prompt_tokens, with_logprobs)}
        if result.stats is not None and result.stats.speculation is not None:
            record["speculation"] = dataclasses.asdict(result.stats.speculation)
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    if str(path) == "-":  # on a terminal, DEL and C1 characters escaped (valid JSON)
        sys.stdout.writelines(for_terminal(sys.stdout, line, json=True) for line in lines)
        return
    target = Path(path)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target}: exists; pass overwrite=True to replace it")
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.writelines(lines)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
