"""``generate()``: one call, one complete result (the top API layer)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mlx_gen.decode import ProgressCallback
from mlx_gen.loading.loader import LoadedModel
from mlx_gen.logprobs.report import TokenLogprob
from mlx_gen.no_allowed_token import NO_TOKEN
from mlx_gen.prefix_cache.cache import PrefixCache
from mlx_gen.prompt_cache import PromptCache
from mlx_gen.prompts import Messages, Prompt
from mlx_gen.settings import GenerationSettings
from mlx_gen.stream import GenerationChunk, GenerationStats, stream_generate


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
        return cls(
            text="".join(c.text for c in chunks),
            token_ids=[c.token for c in real],
            tokens=[decode(c.token) for c in real],
            logprobs=[c.logprobs for c in real],
            finish_reason=(last.finish_reason or "length") if last else "length",
            matched=last.matched if last else None,
            stats=last.stats if last else None,
            constraint_complete=last.constraint_complete if last else None,
            finish_message=last.finish_message if last else None,
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
) -> GenerationResult:
    """Generate a complete answer. Same arguments as :func:`~mlx_gen.stream.stream_generate`.

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
        )
    )
    return GenerationResult.from_chunks(chunks, lambda i: model.tokenizer.decode([i]))
