"""Requests → :class:`~mlx_gen.GenerationSettings`, with the checks that need the model.

OpenAI's fields map onto the engine's options one to one (``stop`` → ``stop``,
``logit_bias`` → ``logit_bias``, ``presence_penalty`` / ``frequency_penalty`` → the
OpenAI penalties, ``seed`` → ``seed``); the extensions map onto their namesakes
(``min_tokens`` → ``min_new_tokens``, ``include_stop_str_in_output`` →
``include_stop_str``, ``logprobs_mode`` "both" → both modes). ``logit_bias`` keys are
canonical decimal ids (``"7"``, not ``" 7 "``, ``"07"`` or ``"1_0"``) and its values,
finite (the schema refuses NaN and ±Infinity), are clamped to [-100, 100] as OpenAI
documents. Choice ``i`` of a request with ``n > 1`` uses ``seed + i``, so each choice
equals ``generate`` with that seed."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from mlx_gen.loading.loader import LoadedModel
from mlx_gen.server.bridge import MAX_UNREAD_EVENTS
from mlx_gen.server.errors import ApiError
from mlx_gen.server.response_format import constraint_for
from mlx_gen.server.schemas import SamplingRequest
from mlx_gen.settings import GenerationSettings

BIAS_LIMIT = 100.0
_CANONICAL_ID = re.compile(r"0|[1-9][0-9]{0,18}")


@dataclass(frozen=True)
class Limits:
    """Server-wide limits on one request.

    Attributes:
        max_tokens: The most tokens a request may ask for (``--max-tokens-limit``).
        max_choices: The most choices (``n`` x prompts) one request may ask for.
        max_prompt_chars: The most characters of prompt text (or of all messages'
            content) a request may send; checked before tokenizing (``None``: no bound).
        max_unread_events: Events a streaming request may leave unread (then it is
            cancelled; see :mod:`mlx_gen.server.bridge`).
    """

    max_tokens: int | None = None
    max_choices: int = 64
    max_prompt_chars: int | None = None
    max_unread_events: int = MAX_UNREAD_EVENTS


#: Characters per token of context a text prompt may have (``--max-prompt-chars``).
CHARS_PER_TOKEN = 8
#: Without a known context length, a text prompt may have this many characters.
UNKNOWN_CONTEXT_CHARS = 2**20


def prompt_chars_bound(model: LoadedModel) -> int:
    """The default ``max_prompt_chars``: :data:`CHARS_PER_TOKEN` x the context length.

    Text averages 3-5 characters per token, so a longer prompt cannot fit the context;
    refusing it before tokenizing bounds the tokenizer's work (its ids become Python
    lists while it holds the GIL: 8.4 M ids stalled ``/health`` 1.7 s). Without a known
    context: :data:`UNKNOWN_CONTEXT_CHARS`.
    """
    window = context_length(model)
    return UNKNOWN_CONTEXT_CHARS if window is None else CHARS_PER_TOKEN * window


def check_prompt_chars(chars: int, limits: Limits, param: str) -> None:
    """400 when ``chars`` passes ``limits.max_prompt_chars`` (before any tokenizing)."""
    bound = limits.max_prompt_chars
    if bound is not None and chars > bound:
        raise ApiError(
            400,
            f"{param} has {chars} characters, more than the server's limit ({bound}: "
            f"--max-prompt-chars; by default {CHARS_PER_TOKEN} characters per token of the "
            "model's context)",
            param=param,
        )


def context_length(model: LoadedModel) -> int | None:
    """The model's context length (``max_position_embeddings``), if it says."""
    value = model.config.get("max_position_embeddings")
    return value if isinstance(value, int) and value > 0 else None


def _ids_in_vocab(name: str, ids: list[int] | None, vocab: int) -> None:
    bad = [i for i in ids or () if not 0 <= i < vocab]
    if bad:
        raise ApiError(
            400, f"{name}: ids {bad} are outside the vocabulary (0..{vocab - 1})", param=name
        )


def logit_bias(raw: dict[str, float] | None, vocab: int) -> dict[int, float] | None:
    """Parse OpenAI's ``{"id": bias}`` (canonical decimal keys), clamping to [-100, 100].

    Values reach here finite (the schema refuses NaN and ±Infinity: ``min(100, nan)``
    would be ``100``, forcing the token).
    """
    if not raw:
        return None
    out = {}
    for key, value in raw.items():
        if not _CANONICAL_ID.fullmatch(key):
            raise ApiError(
                400,
                f"logit_bias: key {key!r} is not a token id (a decimal integer such as "
                "'42', no sign, spaces, underscores or leading zeros)",
                param="logit_bias",
            )
        token = int(key)
        if not 0 <= token < vocab:
            raise ApiError(
                400,
                f"logit_bias: id {token} is outside the vocabulary (0..{vocab - 1})",
                param="logit_bias",
            )
        out[token] = max(-BIAS_LIMIT, min(BIAS_LIMIT, float(value)))
    return out


def _stops(stop: str | list[str] | None) -> tuple[str, ...]:
    stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
    if any(not s for s in stops):
        raise ApiError(400, f"stop: {list(stops)!r} contains an empty string", param="stop")
    return stops


def check_context(prompt_len: int, model: LoadedModel, param: str = "prompt") -> int | None:
    """The model's context length; ``ApiError`` (400) when ``prompt_len`` tokens fill it."""
    window = context_length(model)
    if window is not None and prompt_len >= window:
        raise ApiError(
            400,
            f"the prompt has {prompt_len} tokens, more than the model's context "
            f"({window} tokens) allows",
            param=param,
        )
    return window


def max_tokens(
    requested: int | None,
    prompt_len: int,
    model: LoadedModel,
    limits: Limits,
    param: str,
    *,
    prompt_param: str = "prompt",
) -> int:
    """The request's ``max_tokens``, checked against the limit and the context length.

    Unset, it is the model's default capped by the limit and the room left in the context.
    """
    window = check_context(prompt_len, model, prompt_param)
    if requested is not None and limits.max_tokens is not None and requested > limits.max_tokens:
        raise ApiError(
            400,
            f"{param}={requested} is more than the server's limit ({limits.max_tokens})",
            param=param,
        )
    if requested is not None and window is not None and prompt_len + requested > window:
        raise ApiError(
            400,
            f"{param}={requested} plus the prompt's {prompt_len} tokens is more than the "
            f"model's context ({window} tokens)",
            param=param,
        )
    if requested is None:
        default = GenerationSettings().resolved_max_tokens(model.generation_config)
        caps = [c for c in (limits.max_tokens, window and window - prompt_len) if c]
        requested = min([default, *caps])
    return requested


def base_settings(
    req: SamplingRequest,
    model: LoadedModel,
    *,
    top_logprobs: int | None,
    response_format: Any,
) -> GenerationSettings:
    """The settings every choice of ``req`` shares (``max_tokens`` and ``seed`` set later)."""
    vocab = model.vocab_size
    for name in ("suppress_tokens", "begin_suppress_tokens", "logprob_token_ids"):
        _ids_in_vocab(name, getattr(req, name), vocab)
    if req.logprob_token_ids and top_logprobs is None:
        top_logprobs = 0
    modes = ("raw", "processed") if req.logprobs_mode == "both" else (req.logprobs_mode,)
    fields: dict[str, Any] = {
        "temperature": req.temperature,
        "top_p": req.top_p,
        "top_k": 0 if req.top_k == -1 else req.top_k,
        "min_p": req.min_p,
        "logit_bias": logit_bias(req.logit_bias, vocab),
        "suppress_tokens": req.suppress_tokens,
        "begin_suppress_tokens": req.begin_suppress_tokens,
        "min_new_tokens": req.min_tokens,
        "repetition_penalty": req.repetition_penalty,
        "presence_penalty": req.presence_penalty,
        "frequency_penalty": req.frequency_penalty,
        "bad_words": tuple(req.bad_words or ()),
        "ignore_eos": req.ignore_eos,
        "stop": _stops(req.stop),
        "include_stop_str": req.include_stop_str_in_output,
        "logprobs": top_logprobs,
        "logprob_token_ids": tuple(req.logprob_token_ids or ()),
        "logprobs_modes": modes,
    }
    constraint = constraint_for(response_format)
    if constraint is not None:
        fields["constraint"] = constraint
    try:
        return GenerationSettings(**fields)
    except (ValueError, TypeError) as err:
        raise ApiError(400, str(err)) from err


def choice_settings(
    base: GenerationSettings, *, seed: int | None, choice: int, max_tokens: int | None
) -> GenerationSettings:
    """Choice ``choice``'s settings: ``seed + choice`` (wrapping at 2**64) and ``max_tokens``."""
    seed = None if seed is None else (seed + choice) % 2**64
    return dataclasses.replace(base, seed=seed, max_tokens=max_tokens)
