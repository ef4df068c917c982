"""Drafters for speculative decoding: what proposes the tokens the target model verifies.

Two drafters, chosen with ``GenerationSettings(speculative=...)``:

* :class:`PromptLookup` — no second model: the last ``n`` tokens (``max_ngram`` down to
  ``min_ngram``) are looked up in the prompt and the text generated so far, and the
  tokens that followed their latest earlier occurrence are proposed. Cheap, and a big
  win when the output copies its input (editing, summarizing, code).
* :class:`DraftModel` — a smaller model with the same vocabulary proposes tokens one by
  one (greedy when the call is greedy, else sampled from its own processed
  distribution, which the verifier then needs).

Drafts only decide how much work one verification saves: the verifier in
:mod:`mlx_gen.speculative` keeps the output exact whatever the drafter proposes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import mlx.core as mx

from mlx_gen.constraints.mask import apply_token_bitmask
from mlx_gen.loading.loader import LoadedModel
from mlx_gen.processors.context import LogitsProcessor, ProcessorContext
from mlx_gen.prompt_cache import PromptCache
from mlx_gen.sampling import SamplingParams, filter_logits, sample

_MAX_PAUSE = 64


def _check(ok: bool, name: str, value: object, expected: str) -> None:
    if not ok:
        raise ValueError(f"{name}={value!r} is invalid (expected {expected})")


@dataclass(frozen=True)
class PromptLookup:
    """Speculate with n-gram prompt lookup (no draft model).

    Args:
        num_draft: Most tokens proposed per verification (``>= 1``).
        max_ngram: Longest suffix looked up (``>= min_ngram``).
        min_ngram: Shortest suffix looked up (``>= 1``); shorter matches are weaker.
        measure_cost: Time plain steps and verification rounds and draft only where it
            pays (:mod:`mlx_gen.speculation_cost`); ``False`` drafts whenever the drafter
            has tokens (for tests and measurements of the verifier itself).

    >>> PromptLookup(num_draft=8).max_ngram
    3
    """

    num_draft: int = 10
    max_ngram: int = 3
    min_ngram: int = 2
    measure_cost: bool = True

    def __post_init__(self) -> None:
        _check(_is_int(self.num_draft) and self.num_draft >= 1, "num_draft", self.num_draft,
               "an int >= 1")  # fmt: skip
        _check(_is_int(self.min_ngram) and self.min_ngram >= 1, "min_ngram", self.min_ngram,
               "an int >= 1")  # fmt: skip
        _check(_is_int(self.max_ngram) and self.max_ngram >= self.min_ngram, "max_ngram",
               self.max_ngram, f"an int >= min_ngram ({self.min_ngram})")  # fmt: skip
        _check(isinstance(self.measure_cost, bool), "measure_cost", self.measure_cost, "a bool")


@dataclass(frozen=True, eq=False)
class DraftModel:
    """Speculate with a smaller draft model that shares the target's vocabulary.

    Args:
        model: The draft model (its ``vocab_size`` must equal the target's; checked when
            generation starts).
        num_draft: Most tokens proposed per verification (``>= 1``).
        measure_cost: As for :class:`PromptLookup`.
    """

    model: LoadedModel
    num_draft: int = 4
    measure_cost: bool = True

    def __post_init__(self) -> None:
        _check(isinstance(self.model, LoadedModel), "model", type(self.model).__name__,
               "a LoadedModel from mlx_gen.load")  # fmt: skip
        _check(_is_int(self.num_draft) and self.num_draft >= 1, "num_draft", self.num_draft,
               "an int >= 1")  # fmt: skip
        _check(isinstance(self.measure_cost, bool), "measure_cost", self.measure_cost, "a bool")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Draft:
    """Proposed tokens for the positions after the last generated one.

    Attributes:
        tokens: ``(k,)`` int32 ids, possibly lazy.
        log_q: ``(k, V)`` log-probabilities the tokens were sampled from, or ``None`` for
            a deterministic drafter (prompt lookup, greedy draft model).
    """

    tokens: mx.array
    log_q: mx.array | None = None


class LookupDrafter:
    """Prompt lookup over one call's context: an index of n-grams to their latest end.

    Args:
        config: The :class:`PromptLookup` settings.
        context: The prompt ids (generated ids are added with :meth:`extend`).

    >>> d = LookupDrafter(PromptLookup(num_draft=3, max_ngram=2), [5, 6, 7, 8, 5, 6])
    >>> d.propose(3)
    [7, 8, 5]
    """

    def __init__(self, config: PromptLookup, context: Sequence[int]) -> None:
        self.config = config
        self.context: list[int] = []
        self.index: dict[tuple[int, ...], int] = {}
        self.extend(context)

    def extend(self, tokens: Sequence[int]) -> None:
        """Append ``tokens`` to the context and index the n-grams that now have a successor."""
        lo, hi = self.config.min_ngram, self.config.max_ngram
        for token in tokens:
            end = len(self.context)  # n-grams ending here are followed by ``token``
            for n in range(lo, min(hi, end) + 1):
                self.index[tuple(self.context[end - n : end])] = end
            self.context.append(int(token))

    def propose(self, limit: int) -> list[int]:
        """Up to ``limit`` tokens that followed the longest matching suffix ([] if none)."""
        ctx = self.context
        for n in range(min(self.config.max_ngram, len(ctx)), self.config.min_ngram - 1, -1):
            end = self.index.get(tuple(ctx[len(ctx) - n :]))
            if end is not None:
                return ctx[end : end + limit]
        return []


class DraftGuide(Protocol):
    """What constrains a draft model's proposals (the grammar, under a constraint)."""

    def mask(self) -> mx.array | None:
        """The next position's ``(1, W)`` bitmask, or ``None`` when nothing is allowed."""

    def advance(self, token: int) -> bool:
        """Take ``token`` as drafted; ``False``: do not draft it, and stop drafting."""


class ModelDrafter:
    """Drafts with a second model, applying the call's processors and sampling filters.

    The draft model keeps its own :class:`PromptCache`; each :meth:`propose` reuses the
    longest prefix it holds (rejected drafts are trimmed) and feeds the rest.

    Args:
        config: The :class:`DraftModel` settings.
        processors: The call's processors (the same the target runs).
        sampling: The call's sampling filters; greedy drafts the argmax.
        prompt: The prompt, ``(P,)`` int32, for the processors' context.
        key: The drafter's PRNG key (used only when sampling).
        prefill_step_size: Tokens per forward pass when catching up on a long context.
    """

    def __init__(
        self,
        config: DraftModel,
        *,
        processors: Sequence[LogitsProcessor],
        sampling: SamplingParams,
        prompt: mx.array,
        key: mx.array,
        prefill_step_size: int,
    ) -> None:
        self.model = config.model
        self.processors, self.sampling, self.prompt = tuple(processors), sampling, prompt
        self.key, self.step_size = key, prefill_step_size
        self.cache = PromptCache(self.model.model)
        self._unrecorded: mx.array | None = None  # drafts fed last time, read after verifying

    def propose(
        self,
        context: Sequence[int],
        generated: Sequence[int],
        limit: int,
        guide: DraftGuide | None = None,
    ) -> Draft:
        """Draft up to ``limit`` tokens after ``context`` (= prompt + ``generated``).

        Lazy without a ``guide``; with one (a constraint), each position is masked by
        ``guide.mask()`` after the processors and its token read to ``guide.advance``,
        and drafting stops where the guide allows nothing or refuses the token.
        """
        if self._unrecorded is not None:
            self.cache.record(self._unrecorded.tolist())  # already evaluated by the verifier
        cached = self.cache.reuse_for(context)
        feed = list(context[cached:])
        for start in range(0, len(feed) - 1, self.step_size):  # catch up on long contexts
            chunk = feed[start : min(start + self.step_size, len(feed) - 1)]
            self._forward(mx.array(chunk, dtype=mx.int32))
            mx.eval([c.state for c in self.cache.layers])
        inputs = mx.array(feed[-1:], dtype=mx.int32)
        self.cache.record(feed)
        base = mx.array(list(generated), dtype=mx.int32)
        tokens, log_q, stopped = [], [], False
        for i in range(limit):
            logits = self._forward(inputs)
            mask = guide.mask() if guide is not None else None
            if guide is not None and mask is None:
                stopped = True
                break
            ctx_ids = mx.concatenate([base, *tokens]) if tokens else base
            ctx = ProcessorContext(self.prompt, ctx_ids, len(generated) + i)
            token, row = self._pick(logits, ctx, mask)
            if guide is not None and not guide.advance(token.item()):
                stopped = True
                break
            tokens.append(token)
            log_q.append(row)
            inputs = token
        if not tokens:
            self._unrecorded = None
            return Draft(mx.zeros((0,), dtype=mx.int32))
        drafts = mx.concatenate(tokens)
        # Every draft but the last was fed to the draft model (the last too when stopped).
        self._unrecorded = drafts if stopped else drafts[:-1]
        return Draft(drafts, None if self.sampling.greedy else mx.concatenate(log_q))

    def _forward(self, inputs: mx.array) -> mx.array:
        logits = self.model.model(inputs[None], cache=self.cache.layers)[:, -1, :]
        return logits.astype(mx.float32)

    def _pick(
        self, logits: mx.array, ctx: ProcessorContext, mask: mx.array | None
    ) -> tuple[mx.array, mx.array | None]:
        for processor in self.processors:
            logits = processor(logits, ctx)
        if mask is not None:
            logits = apply_token_bitmask(logits, mask)
        filtered = filter_logits(logits, self.sampling)
        if self.sampling.greedy:
            return sample(filtered, None, True), None
        self.key, key = mx.random.split(self.key)
        log_q = filtered - mx.logsumexp(filtered, axis=-1, keepdims=True)
        return sample(filtered, key, False), log_q


class Backoff:
    """The adaptive draft length and the pause after rejected drafts.

    >>> b = Backoff(4)
    >>> b.update(drafted=4, accepted=0); (b.length, b.ready())
    (1, False)
    >>> b.tick(); b.tick(); b.ready()
    True
    """

    def __init__(self, num_draft: int) -> None:
        self.max_length, self.length = num_draft, num_draft
        self.misses, self.pause = 0, 0

    def ready(self) -> bool:
        """Whether drafting is allowed now."""
        return self.pause == 0

    def tick(self) -> None:
        """One token was decoded without drafting."""
        self.pause = max(0, self.pause - 1)

    def update(self, *, drafted: int, accepted: int) -> None:
        """Adapt after a round that accepted ``accepted`` of ``drafted`` drafts."""
        if accepted == drafted:
            self.length = min(self.max_length, self.length + 2)
        else:
            self.length = max(1, accepted + 1)
        self.misses = self.misses + 1 if accepted == 0 else 0
        self.pause = min(2**self.misses, _MAX_PAUSE) if self.misses else 0
