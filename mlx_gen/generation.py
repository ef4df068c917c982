"""``generate()``: one call, one complete result (the top API layer)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlx_gen.decode import ProgressCallback
from mlx_gen.loading.loader import LoadedModel
from mlx_gen.logprobs.report import TokenLogprob
from mlx_gen.no_allowed_token import NO_TOKEN
from mlx_gen.prefix_cache.cache import PrefixCache
from mlx_gen.prompt_cache import PromptCache
from mlx_gen.prompts import Messages, Prompt
from mlx_gen.settings import GenerationSettings
from mlx_gen.stream import GenerationChunk, GenerationStats, stream_generate
from mlx_gen.tools.types import ToolCall


@dataclass(frozen=True)
class GenerationResult:
    """The outcome of :func:`generate`.

    Attributes:
        text: The generated text (EOS not rendered; stop string excluded unless asked).
        token_ids: Every generated id, the EOS or stop-completing token included.
        tokens: Each id decoded on its own, for display.
        logprobs: Per token, ``{mode: TokenLogprob}`` (empty dicts when not requested).
        finish_reason: ``stop``, ``stop_string``, ``criterion``, ``length``,
            ``no_allowed_token`` (every id was banned, or the logits were NaN; what was
            generated before is kept) or ``constraint`` (the constraint and the other
            controls left no allowed token, or llguidance's matcher failed; what was
            generated before is a valid prefix and is kept).
        matched: The EOS id or stop string that ended generation, else ``None``.
        stats: Token counts, tokens/s, time to first token, peak memory.
        constraint_complete: Under a constraint, whether the generated tokens form a
            complete match (``False`` after ``length``: the output is incomplete);
            ``None`` without a constraint.
        finish_message: Why a ``constraint`` finish happened (llguidance's message when
            its matcher failed), else ``None``.
        content: For chat messages, the answer without reasoning and call syntax (the
            whitespace after the think block dropped, and around calls trimmed); for a
            plain prompt, ``text``.
        reasoning: The think block's text, or ``None`` when there was none.
        tool_calls: The complete tool calls, in order (a call cut by ``max_tokens`` is
            not one).
        grammar: Per token, what a constraint's mask did (``forced``, ``masked``,
            ``free``), or ``None`` per token without one.
    """

    text: str
    token_ids: list[int]
    tokens: list[str]
    logprobs: list[dict[str, TokenLogprob]]
    finish_reason: str
    matched: int | str | None
    stats: GenerationStats | None
    constraint_complete: bool | None = None
    finish_message: str | None = None
    content: str = ""
    reasoning: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    grammar: list[str | None] = field(default_factory=list)

    @classmethod
    def from_chunks(
        cls, chunks: Sequence[GenerationChunk], decode: Callable[[int], str]
    ) -> GenerationResult:
        """Assemble the result of streamed ``chunks``; ``decode(id)`` renders one token.

        No chunks (``max_tokens=0``) gives an empty result with ``finish_reason="length"``.
        A final ``NO_TOKEN`` chunk adds its text but no token.
        """
        last = chunks[-1] if chunks else None
        real = [c for c in chunks if c.token != NO_TOKEN]  # token-less ends
        text = "".join(c.text for c in chunks)
        parsed = last.parsed if last else None
        return cls(
            text=text,
            token_ids=[c.token for c in real],
            tokens=[decode(c.token) for c in real],
            logprobs=[c.logprobs for c in real],
            finish_reason=(last.finish_reason or "length") if last else "length",
            matched=last.matched if last else None,
            stats=last.stats if last else None,
            constraint_complete=last.constraint_complete if last else None,
            finish_message=last.finish_message if last else None,
            content=parsed.content if parsed else text,
            reasoning=parsed.reasoning if parsed else None,
            tool_calls=parsed.tool_calls if parsed else (),
            grammar=[c.grammar for c in real],
        )


def generate(
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
) -> GenerationResult:
    """Generate a complete answer. Same arguments as :func:`~mlx_gen.stream.stream_generate`.

    With ``messages=``, the result's ``content``, ``reasoning`` and ``tool_calls`` hold
    the parsed answer (``tools=`` and ``tool_choice=`` as in OpenAI's chat API).

    ``generate(...).text == "".join(c.text for c in stream_generate(...))`` for the same
    arguments (and seed).

    >>> # model = mlx_gen.load()
    >>> # generate(model, messages=[{"role": "user", "content": "Hi"}],
    >>> #          settings=GenerationSettings(max_tokens=20)).text
    """
    chunks = list(
        stream_generate(
            model,
            prompt,
            messages=messages,
            settings=settings,
            prompt_cache=prompt_cache,
            add_special_tokens=add_special_tokens,
            on_prefill=on_prefill,
            tools=tools,
            tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls,
            tool_format=tool_format,
            chat_template_kwargs=chat_template_kwargs,
        )
    )
    return GenerationResult.from_chunks(chunks, lambda i: model.tokenizer.decode([i]))
