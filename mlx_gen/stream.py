"""Text streaming on top of :func:`~mlx_gen.decode.generate_tokens` (the middle layer).

Adds detokenization that is correct across multi-byte characters (mlx-lm's streaming
detokenizer), stop strings with hold-back, custom stopping criteria, and timings.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import mlx.core as mx

from mlx_gen.decode import ProgressCallback, generate_tokens
from mlx_gen.detokenizer import streaming_detokenizer
from mlx_gen.generated_token import GeneratedToken
from mlx_gen.loading.loader import LoadedModel
from mlx_gen.logprobs.report import TokenLogprob
from mlx_gen.no_allowed_token import NO_TOKEN
from mlx_gen.prefix_cache.cache import PrefixCache
from mlx_gen.prompt_cache import PromptCache
from mlx_gen.prompts import Messages, Prompt, encode_prompt
from mlx_gen.settings import GenerationSettings
from mlx_gen.speculation_cost import SpeculationStats
from mlx_gen.speculative import speculative_generate_tokens
from mlx_gen.stopping import StoppingContext, StopStrings
from mlx_gen.tools.parser import OutputParser
from mlx_gen.tools.request import prepare_chat
from mlx_gen.tools.types import ParsedOutput, StreamPiece
from mlx_gen.validation import truncated


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
        speculation: A speculative call's counters and its cost model's decision
            (``None`` without ``settings.speculative``).
    """

    prompt_tokens: int
    generated_tokens: int
    time_to_first_token: float
    prefill_tps: float
    decode_tps: float
    peak_memory_gb: float
    speculation: SpeculationStats | None = None


@dataclass(frozen=True)
class GenerationChunk:
    """One streamed piece.

    Attributes:
        text: Text that became final with this token (may be '' while a partial stop
            string or multi-byte character is held back).
        token: The generated id; ``NO_TOKEN`` (-1) on the last chunk of a generation
            that ended with ``no_allowed_token`` (no id was generated; the chunk may
            still carry held-back text).
        logprobs: Per mode, the token's logprob report (empty when not requested).
        finish_reason: Set on the last chunk: ``stop``, ``stop_string``, ``criterion``,
            ``length``, ``no_allowed_token`` (nothing left to sample from: every id
            banned, or NaN logits) or ``constraint`` (the constraint left nothing allowed,
            or llguidance failed; ``finish_message`` says which).
        matched: The EOS id or stop string that ended generation.
        stats: Set on the last chunk.
        constraint_complete: Under a constraint, whether the tokens so far form a
            complete match (``None`` without one).
        finish_message: Why a ``constraint`` finish happened.
        pieces: For chat messages: the typed pieces (reasoning, content, tool-call
            starts and argument fragments, :mod:`mlx_gen.tools.types`) that became
            final with this chunk.
        parsed: On the last chunk of a chat answer: the answer split into content,
            reasoning and tool calls.
        grammar: What a constraint's mask did to this token (``forced``, ``masked``,
            ``free``; see :class:`~mlx_gen.generated_token.GeneratedToken`).
    """

    text: str
    token: int
    logprobs: dict[str, TokenLogprob] = field(default_factory=dict)
    finish_reason: str | None = None
    matched: int | str | None = None
    stats: GenerationStats | None = None
    constraint_complete: bool | None = None
    finish_message: str | None = None
    pieces: tuple[StreamPiece, ...] = ()
    parsed: ParsedOutput | None = None
    grammar: str | None = None


class TextAssembler:
    """The text layer of one sequence: generated tokens in, :class:`GenerationChunk` out.

    It renders tokens with a streaming detokenizer (the EOS token is never rendered),
    applies stop strings with hold-back, checks custom criteria after every token, and
    attaches :class:`GenerationStats` to the last chunk. Used by :func:`stream_generate`
    and, once per row, by batched generation.

    Args:
        tokenizer: The model's tokenizer wrapper.
        settings: The call's options (``stop``, ``include_stop_str``, ``stopping_criteria``).
        prompt_ids: The prompt, for criteria and stats.
        start: ``time.perf_counter()`` at the start of the call.
    """

    def __init__(
        self, tokenizer: Any, settings: GenerationSettings, prompt_ids: list[int], start: float
    ) -> None:
        self.detokenizer = streaming_detokenizer(
            tokenizer, keep_leading_space=settings.constraint is not None
        )
        self.stops = StopStrings(settings.stop, include_stop_str=settings.include_stop_str)
        self.criteria = tuple(settings.stopping_criteria)
        self.prompt_ids, self.generated = prompt_ids, []
        self.start, self.first = start, 0.0
        self.speculation: SpeculationStats | None = None  # set by a speculative call

    def feed(self, out: GeneratedToken) -> GenerationChunk:
        """Turn one generated token into a chunk; the chunk's ``finish_reason`` ends the row."""
        self.first = self.first or time.perf_counter()
        if out.token != NO_TOKEN:
            self.generated.append(out.token)
        finish, matched = out.finish_reason, out.token if out.finish_reason == "stop" else None
        if out.token != NO_TOKEN and finish != "stop":  # An EOS token is never rendered.
            self.detokenizer.add_token(out.token)
        if finish is not None:
            self.detokenizer.finalize()
        text = self.stops.feed(self.detokenizer.last_segment)
        if self.stops.matched is not None:
            finish, matched = "stop_string", self.stops.matched
        elif finish is None and self._criterion():
            self.detokenizer.finalize()
            text += self.stops.feed(self.detokenizer.last_segment)
            finish = "stop_string" if self.stops.matched is not None else "criterion"
            matched = self.stops.matched
        complete = out.constraint_complete
        if finish is None:
            return GenerationChunk(
                text, out.token, out.logprobs, constraint_complete=complete, grammar=out.grammar
            )
        text += self.stops.flush()
        return GenerationChunk(
            text, out.token, out.logprobs, finish, matched, self._stats(), complete,
            out.finish_message, grammar=out.grammar,
        )  # fmt: skip

    def _criterion(self) -> bool:
        if not self.criteria:
            return False
        ctx = StoppingContext(self.prompt_ids, tuple(self.generated), self.detokenizer.text)
        return any(criterion(ctx) for criterion in self.criteria)

    def _stats(self) -> GenerationStats:
        n, end = len(self.generated), time.perf_counter()
        ttft, decode_time = self.first - self.start, end - self.first
        return GenerationStats(
            len(self.prompt_ids),
            n,
            ttft,
            len(self.prompt_ids) / max(ttft, 1e-9),
            (n - 1) / decode_time if n > 1 and decode_time > 0 else 0.0,
            mx.get_peak_memory() / 1e9,
            self.speculation,
        )


def _with_pieces(chunk: GenerationChunk, parser: OutputParser) -> GenerationChunk:
    """``chunk`` with the pieces its text completes (and the parsed answer at the end)."""
    pieces = parser.feed(chunk.text)
    if chunk.finish_reason is None:
        return replace(chunk, pieces=tuple(pieces))
    pieces += parser.finish()
    return replace(chunk, pieces=tuple(pieces), parsed=parser.result())


def stream_generate(
    model: LoadedModel,
    prompt: Prompt | None = None,
    *,
    messages: Messages | None = None,
    settings: GenerationSettings | None = None,
    prompt_cache: PromptCache | PrefixCache | None = None,
    add_special_tokens: bool = True,
    on_prefill: ProgressCallback | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
    tool_choice: Any = None,
    parallel_tool_calls: bool = True,
    tool_format: str | None = None,
    chat_template_kwargs: Mapping[str, Any] | None = None,
) -> Iterator[GenerationChunk]:
    """Generate, yielding text as it becomes final.

    Args:
        model: A loaded model.
        prompt: Text or token ids (see :func:`~mlx_gen.prompts.encode_prompt`).
        messages: Chat messages, rendered with the chat template instead of ``prompt``
            (assistant ``tool_calls`` and ``tool`` messages included); each chunk then
            carries typed ``pieces`` and the last one the ``parsed`` answer.
        tools: OpenAI function definitions the model may call (``messages=`` only).
        tool_choice: ``"auto"`` (default with tools), ``"required"``, ``"none"``, a tool
            name, or ``{"type": "function", "function": {"name": ...}}``.
        parallel_tool_calls: ``False``: at most one call.
        tool_format: Override the detected call syntax (see :mod:`mlx_gen.tools.formats`).
        chat_template_kwargs: Extra template variables (``enable_thinking``,
            ``reasoning_effort``, ...).
        settings: Per-call options (``None``: the model's defaults).
        prompt_cache: A cache to reuse across calls (a :class:`PromptCache`, or a shared
            :class:`PrefixCache`).
        add_special_tokens: Add BOS when encoding a text prompt.
        on_prefill: ``callback(done, total)`` during prefill.

    Yields:
        :class:`GenerationChunk`; ``"".join(c.text for c in chunks)`` is the output.
    """
    settings = settings or GenerationSettings()
    parser: OutputParser | None = None
    if messages is not None and prompt is None:
        plan = prepare_chat(
            model.tokenizer, messages, settings=settings, tools=tools, tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls, tool_format=tool_format,
            chat_template_kwargs=chat_template_kwargs,
        )  # fmt: skip
        prompt_ids, settings, parser = plan.prompt_ids, plan.settings, plan.parser()
    else:
        if tools is not None or chat_template_kwargs is not None:
            raise ValueError("tools= and chat_template_kwargs= need messages=, not prompt=")
        prompt_ids = encode_prompt(
            model.tokenizer, prompt, messages=messages, add_special_tokens=add_special_tokens
        )
    prompt_ids = truncated(prompt_ids, settings.truncate_prompt)  # as generate_tokens does
    text = TextAssembler(model.tokenizer, settings, prompt_ids, time.perf_counter())
    mx.reset_peak_memory()
    if settings.speculative is None:
        tokens = generate_tokens(
            model, prompt_ids, settings, prompt_cache=prompt_cache, on_prefill=on_prefill
        )
    else:
        text.speculation = SpeculationStats()
        tokens = speculative_generate_tokens(
            model, prompt_ids, settings, prompt_cache=prompt_cache, on_prefill=on_prefill,
            stats=text.speculation,
        )  # fmt: skip
    try:
        for out in tokens:
            chunk = text.feed(out)
            if parser is not None:
                chunk = _with_pieces(chunk, parser)
            yield chunk
            if chunk.finish_reason is not None:
                return
    finally:
        # Discards the queued look-ahead step and settles the PromptCache now, however
        # this stream ends (finished, stop string, closed early, an exception).
        tokens.close()
