"""``--verbose`` output: the resolved defaults, the call's settings, stats, prefill progress.

Pure formatting, like :mod:`mlx_gen.cli.output`, except :class:`PrefillProgress`, which
owns the one progress line on stderr.
"""

from __future__ import annotations

import sys
from typing import TextIO

from mlx_gen.cli.output import Decode, show_token
from mlx_gen.loading.loader import LoadedModel
from mlx_gen.settings import GenerationSettings
from mlx_gen.speculation_cost import SpeculationStats
from mlx_gen.stream import GenerationStats


def defaults_lines(model: LoadedModel) -> list[str]:
    """The model's resolved generation config (EOS ids with the files that named them)."""
    gc = model.generation_config
    eos = [
        f"{i} {show_token(model.tokenizer.decode([i]))} from {'+'.join(gc.eos_sources.get(i, ()))}"
        for i in gc.eos_token_ids
    ]
    lines = [
        f"model: {model.source} (vocab {model.vocab_size})",
        "generation config (resolved from the model's files; flags override):",
        f"  eos_token_ids: {', '.join(eos) or 'none'}",
    ]
    skip = ("eos_token_ids", "eos_sources")
    return lines + [f"  {k}: {v}" for k, v in vars(gc).items() if k not in skip]


def call_lines(model: LoadedModel, settings: GenerationSettings) -> list[str]:
    """What this call uses, each value marked ``(flag)`` or ``(model)``."""
    gc = model.generation_config
    sampling = settings.sampling(gc)
    given = {
        "temperature": settings.temperature,
        "top_k": settings.top_k,
        "top_p": settings.top_p,
        "min_p": settings.min_p,
    }
    used = [
        f"{k}={getattr(sampling, k)} ({'model' if v is None else 'flag'})" for k, v in given.items()
    ]
    eos_flags = settings.ignore_eos or settings.eos_token_ids is not None
    eos_flags = eos_flags or bool(settings.extra_eos_token_ids)
    return [
        "this call:",
        f"  {'greedy' if sampling.greedy else 'sampling'}: {', '.join(used)}",
        f"  max_tokens={settings.resolved_max_tokens(gc)} "
        f"({'flag' if settings.max_tokens is not None else 'model, else 256'})",
        f"  stop ids={list(settings.eos_set(gc))} ({'flags' if eos_flags else 'model'}), "
        f"stop strings={list(settings.stop)}",
    ]


def stats_lines(
    stats: GenerationStats | None, finish: str, matched: int | str | None, decode: Decode
) -> list[str]:
    """``--verbose`` stats: speeds, time to first token, peak memory, finish reason."""
    if isinstance(matched, int):
        finish += f" (EOS id {matched} {show_token(decode(matched))})"
    elif matched is not None:
        finish += f" (matched {matched!r})"
    if stats is None:
        return [f"finish: {finish} (nothing generated)"]
    return [
        f"prompt: {stats.prompt_tokens} tokens, {stats.prefill_tps:.1f} tokens/s; "
        f"time to first token {stats.time_to_first_token:.3f} s",
        f"generation: {stats.generated_tokens} tokens, {stats.decode_tps:.1f} tokens/s; "
        f"peak memory {stats.peak_memory_gb:.3f} GB",
        f"finish: {finish}",
        *_speculation_lines(stats.speculation),
    ]


def _speculation_lines(spec: SpeculationStats | None) -> list[str]:
    """``--verbose``: drafts, acceptance, the measured costs and the cost model's decision."""
    if spec is None:
        return []
    costs = ""
    if spec.step_s is not None and spec.per_draft_s is not None:
        costs = (
            f"; plain step {1000 * spec.step_s:.2f} ms, each drafted position "
            f"{1000 * spec.per_draft_s:.2f} ms"
        )
    return [
        f"speculation: {spec.accepted}/{spec.drafted} drafts accepted "
        f"({spec.acceptance_rate:.0%}) in {spec.rounds} rounds, {spec.plain_tokens} plain "
        f"steps{costs}; decision: {spec.decision}"
    ]


class PrefillProgress:
    """``on_prefill`` callback: one ``\\r``-updated stderr line for prompts over ``threshold``.

    Args:
        total: Prompt tokens.
        threshold: Show nothing for prompts of at most this many tokens.
        stream: Where to write (default ``sys.stderr``).
    """

    def __init__(self, total: int, threshold: int = 256, stream: TextIO | None = None) -> None:
        self.active = total > threshold
        self.stream = stream or sys.stderr

    def __call__(self, done: int, total: int) -> None:
        if not self.active:
            return
        end = "\n" if done >= total else ""
        self.stream.write(f"\rprefill: {done}/{total} tokens ({done / total:.0%}){end}")
        self.stream.flush()
        if done >= total:
            self.active = False  # Report completion once.
