"""Text streaming on top of :func:`~mlx_gen.decode.generate_tokens` (the middle layer).

Adds detokenization that is correct across multi-byte characters (mlx-lm's streaming
detokenizer), stop strings with hold-back, custom stopping criteria, and timings.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import mlx.core as mx

from mlx_gen.decode import ProgressCallback, generate_tokens
from mlx_gen.detokenizer import streaming_detokenizer
from mlx_gen.loader import LoadedModel
from mlx_gen.logprobs import TokenLogprob
from mlx_gen.prompt_cache import PromptCache
from mlx_gen.prompts import Messages, Prompt, encode_prompt
from mlx_gen.settings import GenerationSettings
from mlx_gen.stopping import StoppingContext, StopStrings


@dataclass(frozen=True)
class GenerationStats:
    """Counts and speeds of one call.

    Attributes:
        prompt_tokens: Prompt length (cached part included).
        generated_tokens: Tokens generated (EOS included).
        time_to_first_token: Seconds from the call to the first token.
        prefill_tps: Prompt tokens per second (prefill + first token).
        decode_tps: Generated tokens per second after the first.
        peak_memory_gb: MLX's peak memory in GB.
    """

    prompt_tokens: int
    generated_tokens: int
    time_to_first_token: float
    prefill_tps: float
    decode_tps: float
    peak_memory_gb: float


@dataclass(frozen=True)
class GenerationChunk:
    """One streamed piece.

    Attributes:
        text: Text that became final with this token (may be '' while a partial stop
            string or multi-byte character is held back).
        token: The generated id.
        logprobs: Per mode, the token's logprob report (empty when not requested).
        finish_reason: Set on the last chunk: ``stop``, ``stop_string``, ``criterion``
            or ``length``.
        matched: The EOS id or stop string that ended generation.
        stats: Set on the last chunk.
    """

    text: str
    token: int
    logprobs: dict[str, TokenLogprob] = field(default_factory=dict)
    finish_reason: str | None = None
    matched: int | str | None = None
    stats: GenerationStats | None = None


def _stats(prompt_len: int, n: int, start: float, first: float, end: float) -> GenerationStats:
    decode_time = end - first
    return GenerationStats(prompt_len, n, first - start, prompt_len / max(first - start, 1e-9),
                           (n - 1) / decode_time if n > 1 and decode_time > 0 else 0.0,
                           mx.get_peak_memory() / 1e9)


def stream_generate(model: LoadedModel, prompt: Prompt | None = None, *,
                    messages: Messages | None = None,
                    settings: GenerationSettings | None = None,
                    prompt_cache: PromptCache | None = None,
                    add_special_tokens: bool = True,
                    on_prefill: ProgressCallback | None = None) -> Iterator[GenerationChunk]:
    """Generate, yielding text as it becomes final.

    Args:
        model: A loaded model.
        prompt: Text or token ids (see :func:`~mlx_gen.prompts.encode_prompt`).
        messages: Chat messages, rendered with the chat template instead of ``prompt``.
        settings: Per-call options (``None``: the model's defaults).
        prompt_cache: A cache to reuse across calls.
        add_special_tokens: Add BOS when encoding a text prompt.
        on_prefill: ``callback(done, total)`` during prefill.

    Yields:
        :class:`GenerationChunk`; ``"".join(c.text for c in chunks)`` is the output.
    """
    settings = settings or GenerationSettings()
    prompt_ids = encode_prompt(model.tokenizer, prompt, messages=messages,
                               add_special_tokens=add_special_tokens)
    detokenizer = streaming_detokenizer(model.tokenizer)
    stops = StopStrings(settings.stop, include_stop_str=settings.include_stop_str)
    generated: list[int] = []
    start, first = time.perf_counter(), 0.0
    mx.reset_peak_memory()
    tokens = generate_tokens(model, prompt_ids, settings, prompt_cache=prompt_cache,
                             on_prefill=on_prefill)
    for out in tokens:
        first = first or time.perf_counter()
        generated.append(out.token)
        finish, matched = out.finish_reason, out.token if out.finish_reason == "stop" else None
        if finish != "stop":  # An EOS token is never rendered.
            detokenizer.add_token(out.token)
        if finish is not None:
            detokenizer.finalize()
        text = stops.feed(detokenizer.last_segment)
        if stops.matched is not None:
            finish, matched = "stop_string", stops.matched
        elif finish is None and any(c(StoppingContext(prompt_ids, tuple(generated),
                                                      detokenizer.text))
                                    for c in settings.stopping_criteria):
            detokenizer.finalize()
            text += stops.feed(detokenizer.last_segment)
            finish = "stop_string" if stops.matched is not None else "criterion"
            matched = stops.matched
        if finish is not None:
            text += stops.flush()
            stats = _stats(len(prompt_ids), len(generated), start, first, time.perf_counter())
            yield GenerationChunk(text, out.token, out.logprobs, finish, matched, stats)
            tokens.close()  # Discards the queued look-ahead step.
            return
        yield GenerationChunk(text, out.token, out.logprobs)
