"""A call's plan: its settings resolved against the model, and the boundary every loop calls.

:class:`DecodePlan` is built once per call (processors in their order, sampling filters,
the EOS set, ``max_tokens``, the logprob request, the seed, a compiled constraint);
:func:`checked_call` checks the prompt (ids, truncation, context) and clamps
``max_tokens`` before any decode loop (plain, batched, guided, speculative) starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from mlx_gen.constraints import CompiledConstraint, compile_constraint
from mlx_gen.controls import build_processors
from mlx_gen.drafters import DraftModel, PromptLookup
from mlx_gen.loading.distributed import agreed_seed
from mlx_gen.loading.loader import LoadedModel
from mlx_gen.logprobs.report import LogprobRequest
from mlx_gen.processors.context import LogitsProcessor
from mlx_gen.sampling import SamplingParams
from mlx_gen.settings import GenerationSettings
from mlx_gen.validation import check_fits, context_length, room, token_ids, truncated


@dataclass(frozen=True)
class DecodePlan:
    """A call's settings resolved against the model: built once, used every step."""

    processors: tuple[LogitsProcessor, ...]
    sampling: SamplingParams
    eos_token_ids: frozenset[int]
    max_tokens: int
    logprobs: LogprobRequest | None
    seed: int
    constraint: CompiledConstraint | None = None
    speculative: PromptLookup | DraftModel | None = None  # the drafter, if speculating

    @classmethod
    def build(cls, model: LoadedModel, settings: GenerationSettings) -> DecodePlan:
        """Resolve ``settings`` against ``model``'s defaults (validates every id once)."""
        defaults, vocab = model.generation_config, model.vocab_size
        eos = settings.eos_set(defaults)
        for i in [*eos, *settings.logprob_token_ids]:
            if not 0 <= i < vocab:
                raise ValueError(f"token id {i} is outside the vocabulary (size {vocab})")
        if settings.logprobs is not None and settings.logprobs > vocab:
            raise ValueError(
                f"logprobs={settings.logprobs} is more than the vocabulary size ({vocab})"
            )
        request = None
        if settings.logprobs is not None:
            request = LogprobRequest(
                settings.logprobs,
                tuple(settings.logprob_token_ids),
                tuple(dict.fromkeys(settings.logprobs_modes)),
            )
        processors = build_processors(
            settings, defaults, tokenizer=model.tokenizer, vocab_size=vocab, eos_token_ids=eos
        )
        # Unseeded: a fresh seed, rank 0's on every rank of a sharded model.
        seed = settings.seed if settings.seed is not None else agreed_seed(model.group)
        constraint = compiled_constraint(model, settings)
        return cls(
            tuple(processors),
            settings.sampling(defaults),
            frozenset(eos),
            settings.resolved_max_tokens(defaults),
            request,
            seed,
            constraint,
            settings.speculative,
        )


def compiled_constraint(
    model: LoadedModel, settings: GenerationSettings
) -> CompiledConstraint | None:
    """``settings.constraint`` compiled for ``model`` (cached per grammar and tokenizer).

    Every id of the call's EOS set ends it at an accepting state; with ``ignore_eos``
    the model's EOS ids are never allowed (see :mod:`mlx_gen.constraints.compiled`).

    Raises:
        ValueError: The constraint does not compile, or errors on its first token.
    """
    if settings.constraint is None:
        return None
    defaults = model.generation_config
    return compile_constraint(
        settings.constraint,
        model.tokenizer,
        vocab_size=model.vocab_size,
        eos_token_ids=settings.eos_set(defaults),
        fallback_eos_ids=defaults.eos_token_ids,
    )


def checked_call(
    model: LoadedModel, prompt_ids: Sequence[int], settings: GenerationSettings
) -> tuple[list[int], DecodePlan]:
    """The boundary of every decode loop: the prompt checked, and the call's plan.

    The ids are checked against the vocabulary (the first bad one named with its
    position), cut to their last ``settings.truncate_prompt`` when asked, and checked
    against the model's context; the plan's ``max_tokens`` is clamped so that prompt +
    generated tokens fit it. Any decode loop (plain, batched, speculative) calls this
    before its first forward pass.

    Raises:
        ValueError: An empty prompt, an id outside the vocabulary, a prompt that does not
            fit the context (both lengths named), or invalid settings.
    """
    ids = truncated(token_ids(prompt_ids, model.vocab_size), settings.truncate_prompt)
    if not ids:
        raise ValueError("prompt_ids is empty: generation needs at least one prompt token")
    plan = DecodePlan.build(model, settings)
    context = context_length(model.config)
    check_fits(len(ids), context)
    return ids, replace(plan, max_tokens=room(len(ids), context, plan.max_tokens))
