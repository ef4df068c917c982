"""Per-call generation options, and their resolution against a model's defaults.

:class:`GenerationSettings` is what a caller (or the CLI) fills in. A field left at
``None`` takes the model's :class:`~mlx_gen.loading.generation_config.GenerationConfig`
value; an explicit value (including ``()`` or ``0``) wins. Validation happens here,
once per call, never per token.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from mlx_gen.constraints.spec import Constraint
from mlx_gen.drafters import DraftModel, PromptLookup
from mlx_gen.loading.generation_config import GenerationConfig
from mlx_gen.processors.context import LogitsProcessor
from mlx_gen.sampling import SamplingParams
from mlx_gen.setting_types import check_setting_types
from mlx_gen.stopping import StoppingContext

DEFAULT_MAX_TOKENS = 256
LOGPROB_MODES = ("raw", "processed")


@dataclass(frozen=True)
class GenerationSettings:
    """Everything one generation call can control. ``None`` means "the model's default".

    Sampling (filters run temperature → top-k → top-p → min-p):
        max_tokens: Tokens to generate at most (default: ``max_new_tokens`` of the model,
            else 256).
        temperature: ``0`` is greedy. Default: the model's ``temperature`` when its
            ``do_sample`` is true, else greedy.
        top_k, top_p, min_p: Truncation filters (``0``, ``1.0``, ``0.0`` are off).
        seed: A private PRNG key for this call; same seed, same tokens. ``None`` draws one.

    Logit control (fixed order, see :mod:`mlx_gen.controls`):
        logit_bias: ``{id: bias}`` added to the logits; ``±inf`` forces or bans.
        suppress_tokens: Ids banned at every step (default: the model's).
        begin_suppress_tokens: Ids banned at the first ``begin_suppress_steps`` generated
            positions (default: the model's).
        min_new_tokens: No EOS id may be generated before this many tokens.
        repetition_penalty: HF semantics over prompt + generated tokens, or over the last
            ``repetition_context_size`` tokens when that is set.
        presence_penalty, frequency_penalty: OpenAI semantics over generated tokens.
        no_repeat_ngram_size: Never repeat an n-gram of this size.
        bad_words: Strings (banned under every tokenization with and without a leading
            space) or id sequences. Added to the model's ``bad_words_ids``.
        sequence_bias: ``{(id, ...): bias}``, HF semantics.
        allowed_token_ids: When set, every other id is banned.
        logits_processors: Custom ``processor(logits, ctx)``, run after the built-ins.
        constraint: Structured output (``JsonSchema``, ``JsonObject``, ``Regex``,
            ``Grammar``, ``Choice``): applied after every processor, before the sampling
            filters; see :mod:`mlx_gen.guided`.

    Stopping:
        eos_token_ids: Replaces the model's EOS set; ``extra_eos_token_ids`` extends it;
            ``ignore_eos`` turns EOS stopping off.
        stop: Stop strings, matched on decoded text; excluded from the output unless
            ``include_stop_str``.
        stopping_criteria: ``criterion(ctx: StoppingContext) -> bool``, checked after
            every token.

    Log-probabilities:
        logprobs: ``None`` is off; ``0`` reports the chosen token's logprob; ``N``
            adds the top-``N`` alternatives (sorted, chosen token's rank included).
        logprob_token_ids: Also report these ids' logprobs at every step.
        logprobs_modes: Any of ``"raw"`` (model distribution) and ``"processed"`` (the
            distribution sampled from).

    Prefill:
        prefill_step_size: Prompt tokens per forward pass while prefilling.
        truncate_prompt: Keep only the last N prompt tokens (vLLM's
            ``truncate_prompt_tokens``; a BOS at the start is cut too). ``None``: a
            prompt that does not fit the model's context is refused, never truncated.

    Reasoning (see :mod:`mlx_gen.processors.thinking_budget`):
        max_thinking_tokens: After this many reasoning tokens (inside ``<think>``), the
            ``thinking_end_message`` and then ``</think>`` are forced. ``None``: no budget.
            Needs ``<think>``/``</think>`` as single tokens of the vocabulary.
        thinking_end_message: Text forced before ``</think>`` when the budget runs out.

    Speculative decoding (see :mod:`mlx_gen.speculative`):
        speculative: ``PromptLookup(...)`` or ``DraftModel(...)`` drafts tokens that the
            model verifies several at a time; every control stays exact. ``None``: off.
            In batches (and the server) a row drafts while it decodes alone
            (:mod:`mlx_gen.batch.speculate`).
    """

    max_tokens: int | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    seed: int | None = None
    logit_bias: Mapping[int, float] | None = None
    suppress_tokens: Sequence[int] | None = None
    begin_suppress_tokens: Sequence[int] | None = None
    begin_suppress_steps: int = 1
    min_new_tokens: int | None = None
    repetition_penalty: float | None = None
    repetition_context_size: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    no_repeat_ngram_size: int | None = None
    bad_words: Sequence[str | Sequence[int]] = ()
    sequence_bias: Mapping[tuple[int, ...], float] | None = None
    allowed_token_ids: Sequence[int] | None = None
    logits_processors: Sequence[LogitsProcessor] = ()
    constraint: Constraint | None = None
    eos_token_ids: Sequence[int] | None = None
    extra_eos_token_ids: Sequence[int] = ()
    ignore_eos: bool = False
    stop: Sequence[str] = ()
    include_stop_str: bool = False
    stopping_criteria: Sequence[Callable[[StoppingContext], bool]] = ()
    logprobs: int | None = None
    logprob_token_ids: Sequence[int] = ()
    logprobs_modes: Sequence[str] = ("raw",)
    prefill_step_size: int = 2048
    speculative: PromptLookup | DraftModel | None = None
    truncate_prompt: int | None = None
    max_thinking_tokens: int | None = None
    thinking_end_message: str = ""

    def __post_init__(self) -> None:
        check_setting_types(self)  # ints only (no 2.5, True, 1e999), bounded; before ranges
        checks = [
            ("max_tokens", self.max_tokens, lambda v: v is None or v >= 0, "an int >= 0"),
            ("begin_suppress_steps", self.begin_suppress_steps, lambda v: v >= 0, "an int >= 0"),
            ("logprobs", self.logprobs, lambda v: v is None or 0 <= v <= 1000, "None or 0..1000"),
            ("prefill_step_size", self.prefill_step_size, lambda v: v >= 1, "an int >= 1"),
            ("truncate_prompt", self.truncate_prompt, lambda v: v is None or v >= 1, "an int >= 1"),
            (
                "max_thinking_tokens",
                self.max_thinking_tokens,
                lambda v: v is None or v >= 0,
                "None or an int >= 0",
            ),
            (
                "thinking_end_message",
                self.thinking_end_message,
                lambda v: isinstance(v, str) and len(v) <= 4096,
                "a string of at most 4096 characters",
            ),
            (
                "seed",
                self.seed,
                lambda v: v is None or (isinstance(v, int) and 0 <= v < 2**64),
                "None or an int in [0, 2**64)",
            ),
            (
                "repetition_context_size",
                self.repetition_context_size,
                lambda v: v is None or v >= 1,
                "None or an int >= 1",
            ),
        ]
        for name, value, ok, valid in checks:
            if not ok(value):
                raise ValueError(f"{name}={value!r} is invalid (expected {valid})")
        bad_modes = [m for m in self.logprobs_modes if m not in LOGPROB_MODES]
        if bad_modes or not self.logprobs_modes:
            raise ValueError(
                f"logprobs_modes={tuple(self.logprobs_modes)!r} is invalid; valid "
                f"modes: {LOGPROB_MODES}"
            )
        if self.constraint is not None and not isinstance(self.constraint, Constraint):
            raise ValueError(
                f"constraint={self.constraint!r} is invalid (expected JsonSchema, JsonObject, "
                "Regex, Grammar or Choice)"
            )
        if self.speculative is not None and not isinstance(
            self.speculative, PromptLookup | DraftModel
        ):
            raise ValueError(
                f"speculative={self.speculative!r} is invalid (expected None, "
                "PromptLookup(...) or DraftModel(...))"
            )
        if isinstance(self.stop, str):
            raise ValueError(f"stop={self.stop!r} must be a list of strings, not one string")
        if any(not s for s in self.stop):
            raise ValueError(f"stop={list(self.stop)!r} contains an empty string")

    def sampling(self, defaults: GenerationConfig) -> SamplingParams:
        """The sampling filters for this call (validated by ``SamplingParams``)."""
        if self.temperature is not None:
            temperature = self.temperature
        else:
            temperature = defaults.temperature if defaults.do_sample else 0.0
        return SamplingParams(
            temperature=temperature,
            top_k=defaults.top_k if self.top_k is None else self.top_k,
            top_p=defaults.top_p if self.top_p is None else self.top_p,
            min_p=defaults.min_p if self.min_p is None else self.min_p,
        )

    def resolved_max_tokens(self, defaults: GenerationConfig) -> int:
        """``max_tokens``, else the model's ``max_new_tokens``, else 256."""
        if self.max_tokens is not None:
            return self.max_tokens
        return (
            defaults.max_new_tokens if defaults.max_new_tokens is not None else DEFAULT_MAX_TOKENS
        )

    def eos_set(self, defaults: GenerationConfig) -> tuple[int, ...]:
        """The ids that stop generation (empty when ``ignore_eos``)."""
        if self.ignore_eos:
            return ()
        base = defaults.eos_token_ids if self.eos_token_ids is None else tuple(self.eos_token_ids)
        return tuple(dict.fromkeys([*base, *self.extra_eos_token_ids]))
