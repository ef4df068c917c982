"""Sampling: the filters that shape the next-token distribution, and the draw from it.

Per step: processed logits (``mlx_gen.processors``) → ``filter_logits`` → ``sample``.
``filter_logits`` applies, in transformers' order, temperature → top-k → top-p →
min-p, each skipped when off; filtered-out tokens get ``-inf``. Under greedy
decoding (``temperature == 0``) nothing is applied: the distribution is the
processed logits themselves and ``sample`` takes their argmax.

Randomness comes only from the key passed to ``sample`` (``mx.random.key(seed)``,
split per step with ``mx.random.split``), never from MLX's global RNG, so one seed
gives one output whatever else runs in the process.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import mlx.core as mx


@dataclass(frozen=True)
class SamplingParams:
    """How to pick the next token from the processed logits.

    Args:
        temperature: Divide logits by this before sampling; ``0`` means greedy
            (argmax, every other field ignored).
        top_k: Keep the ``top_k`` highest logits and any tied with the last of them;
            ``0`` (or ``>= V``) turns it off.
        top_p: Keep the smallest set of most likely tokens whose probability sums to
            at least ``top_p`` (at least one token); ``1.0`` turns it off.
        min_p: Drop tokens whose probability is below ``min_p`` times the top
            token's; ``0.0`` turns it off.

    Raises:
        ValueError: A field is outside its range; the message names the value.

    >>> SamplingParams(temperature=0.7, top_p=0.9).greedy
    False
    >>> SamplingParams(top_p=2)
    Traceback (most recent call last):
    ...
    ValueError: top_p=2 is invalid: expected a number in (0, 1]
    """

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0

    def __post_init__(self) -> None:
        t, k, p, m = self.temperature, self.top_k, self.top_p, self.min_p
        _require(
            _is_real(t) and math.isfinite(t) and t >= 0,
            "temperature",
            t,
            "a finite number >= 0 (0 means greedy)",
        )
        _require(_is_int(k) and k >= 0, "top_k", k, "an int >= 0 (0 turns top-k off)")
        _require(_is_real(p) and 0 < p <= 1, "top_p", p, "a number in (0, 1]")
        _require(_is_real(m) and 0 <= m < 1, "min_p", m, "a number in [0, 1)")

    @property
    def greedy(self) -> bool:
        """``True`` when ``temperature == 0``: take the argmax of the processed logits."""
        return self.temperature == 0


def filter_logits(logits: mx.array, params: SamplingParams) -> mx.array:
    """Return the logits actually sampled from: temperature → top-k → top-p → min-p.

    Semantics match transformers' ``Temperature``/``TopK``/``TopP``/``MinP`` warpers
    with ``min_tokens_to_keep=1``: top-k drops logits below the k-th largest (ties
    kept); top-p sorts ascending and drops the prefix whose cumulative probability
    is ``<= 1 - top_p``, keeping at least the top token (tokens tied with the
    cut-off value are all kept); min-p drops probabilities below ``min_p`` times the
    top probability, computed on the temperature-scaled, already filtered logits.

    Cost: top-k uses a partial selection; top-p sorts the row (about 4 ms for 32k
    entries on MLX's CPU backend) unless top-k is on, in which case only the ``k``
    survivors are sorted; min-p compares logits with ``max + log(min_p)`` (no
    softmax). Filters that are off cost nothing. The output keeps the input's dtype;
    top-p sums probabilities in float32 whatever that dtype is.

    Args:
        logits: Processed logits, shape ``(B, V)``.
        params: The sampling parameters.

    Returns:
        ``(B, V)`` logits with filtered-out tokens at ``-inf``. For greedy params,
        ``logits`` unchanged: the greedy "distribution" is the processed logits,
        without temperature or truncation.

    >>> import mlx.core as mx
    >>> logits = mx.array([[2.0, 1.0, 0.0, -1.0]])
    >>> filter_logits(logits, SamplingParams(temperature=0.5, top_k=2)).tolist()
    [[4.0, 2.0, -inf, -inf]]
    """
    if params.greedy:
        return logits
    scaled = logits if params.temperature == 1 else logits / params.temperature
    vocab = scaled.shape[-1]
    top_k = params.top_k if params.top_k < vocab else 0
    keep = None
    if top_k > 0:
        # Partial selection, not a sort: the k largest, unordered, k-th largest first.
        top = mx.partition(scaled, vocab - top_k, axis=-1)[:, vocab - top_k :]  # (B, k)
        keep = scaled >= top[:, :1]  # transformers drops only logits < k-th value
        if params.top_p < 1:
            keep = scaled >= _top_p_cutoff_within_top_k(top, keep, params.top_p)
    elif params.top_p < 1:
        ascending = mx.sort(scaled, axis=-1)
        probs = mx.softmax(ascending.astype(mx.float32), axis=-1)  # sums in float32 even for bf16
        cumulative = mx.cumsum(probs, axis=-1)
        keep = scaled >= _top_p_cutoff(ascending, cumulative, params.top_p)
    if params.min_p > 0:
        # p < min_p * p_max  <=>  logit < max_logit + log(min_p); filtering kept the max.
        floor = mx.max(scaled, axis=-1, keepdims=True) + math.log(params.min_p)
        keep = scaled >= floor if keep is None else keep & (scaled >= floor)
    return scaled if keep is None else mx.where(keep, scaled, -mx.inf)


def sample(filtered_logits: mx.array, key: mx.array | None, greedy: bool) -> mx.array:
    """Draw one token per row from ``filter_logits``' output.

    Args:
        filtered_logits: ``(B, V)`` logits from ``filter_logits``.
        key: A PRNG key (``mx.random.key(seed)`` or one half of
            ``mx.random.split(key)``); the only source of randomness. Ignored, and
            may be ``None``, when ``greedy``.
        greedy: Take the argmax (first index on ties) instead of sampling.

    Returns:
        ``(B,)`` int32 token ids (lazy).

    Raises:
        ValueError: ``greedy`` is false and ``key`` is ``None`` (the global RNG is
            never used).

    >>> import mlx.core as mx
    >>> sample(mx.array([[0.0, 3.0, 1.0]]), None, greedy=True).tolist()
    [1]
    >>> sample(mx.array([[-mx.inf, 0.0, -mx.inf]]), mx.random.key(0), greedy=False).tolist()
    [1]
    """
    if greedy:
        return mx.argmax(filtered_logits, axis=-1).astype(mx.int32)
    if key is None:
        raise ValueError(
            "sample: key=None is invalid when greedy=False: expected a key from "
            "mx.random.key(seed) (the global RNG is never used)"
        )
    return mx.random.categorical(filtered_logits, axis=-1, key=key).astype(mx.int32)


def _top_p_cutoff(ascending: mx.array, cumulative: mx.array, top_p: float) -> mx.array:
    """The smallest logit top-p keeps, ``(B, 1)``, from sorted logits and their cumulative mass."""
    # The cumulative mass only grows, so the dropped tokens are a prefix; keep >= 1 token.
    n_dropped = mx.sum(cumulative <= 1 - top_p, axis=-1, keepdims=True)
    n_dropped = mx.minimum(n_dropped, ascending.shape[-1] - 1)
    return mx.take_along_axis(ascending, n_dropped, axis=-1)


def _top_p_cutoff_within_top_k(top: mx.array, keep: mx.array, top_p: float) -> mx.array:
    """Top-p cut-off on the top-k survivors only: ``k`` exps instead of ``V``.

    ``top`` (B, k) holds the k largest logits; ``keep`` (B, V) marks every survivor,
    which includes any extra ties with the k-th value (sorted before the others).
    """
    ascending = mx.sort(top, axis=-1)  # (B, k)
    weights = mx.exp((ascending - ascending[:, -1:]).astype(mx.float32))  # unnormalised probs
    extra_ties = mx.sum(keep, axis=-1, keepdims=True) - top.shape[-1]  # (B, 1)
    cumulative = mx.cumsum(weights, axis=-1) + extra_ties * weights[:, :1]
    return _top_p_cutoff(ascending, cumulative / cumulative[:, -1:], top_p)


def _require(ok: bool, name: str, value: object, expected: str) -> None:
    if not ok:
        raise ValueError(f"{name}={value!r} is invalid: expected {expected}")


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
