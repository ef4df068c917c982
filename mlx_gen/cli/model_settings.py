"""The settings that need the loaded model: ids checked against its vocabulary,
``--bad-words`` and ``--logit-bias-text`` encoded by its tokenizer, ``--draft-model``
loaded beside it. Each bad value is a :class:`UsageError` naming its flag.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import mlx_gen as mg
from mlx_gen.cli.options import CliOptions, UsageError
from mlx_gen.loading.draft_model import load_draft_model
from mlx_gen.processors.bad_words import BadWords

# Settings fields holding token ids, and the flag each comes from.
ID_FLAGS = {
    "logit_bias": "--logit-bias",
    "suppress_tokens": "--suppress-tokens",
    "begin_suppress_tokens": "--begin-suppress-tokens",
    "eos_token_ids": "--eos-token-ids",
    "extra_eos_token_ids": "--extra-eos-token-ids",
    "logprob_token_ids": "--logprob-token-ids",
}


def text_bias_ids(tokenizer: Any, text: str) -> list[int]:
    """The ids ``--logit-bias-text TEXT:BIAS`` biases.

    Every token of ``TEXT`` and of ``" " + TEXT`` (``TEXT``'s leading spaces removed
    first), encoded without special tokens; tokens that decode to whitespace only (a
    SentencePiece lone space marker) are skipped, since biasing them would bias every
    word. Order kept, duplicates dropped.
    """
    bare = text.lstrip()
    ids = [
        int(i)
        for variant in (bare, " " + bare)
        for i in tokenizer.encode(variant, add_special_tokens=False)
    ]
    return [i for i in dict.fromkeys(ids) if tokenizer.decode([i]).strip()]


def settings_for_model(options: CliOptions, model: mg.LoadedModel) -> mg.GenerationSettings:
    """``options.settings`` checked against ``model``'s vocabulary, text biases added.

    Raises:
        UsageError: A token id outside the vocabulary (the flag is named), a
            ``--bad-words`` word that is blank or encodes to no token, a
            ``--logit-bias-text`` that encodes to no token, or a ``--draft-model`` that
            does not load or has another vocabulary size.
    """
    settings, vocab = options.settings, model.vocab_size
    for field, flag in ID_FLAGS.items():
        for i in getattr(settings, field) or ():
            if i >= vocab:
                raise UsageError(
                    f"argument {flag}: token id {i} is outside the vocabulary "
                    f"(valid ids: 0..{vocab - 1})"
                )
    for word in settings.bad_words or ():
        try:
            BadWords.from_strings([word], model.tokenizer, vocab_size=vocab)
        except ValueError as e:
            raise UsageError(f"argument --bad-words: {e}") from None
    if options.draft_model is not None:
        settings = replace(settings, speculative=_draft_model(options, model))
    if not options.logit_bias_text:
        return settings
    bias: dict[int, float] = {}
    for text, value in options.logit_bias_text:
        ids = text_bias_ids(model.tokenizer, text)
        if not ids:
            raise UsageError(f"argument --logit-bias-text: {text!r} encodes to no token")
        bias.update(dict.fromkeys(ids, value))
    bias.update(settings.logit_bias or {})  # An explicit --logit-bias ID wins.
    return replace(settings, logit_bias=bias)


def _draft_model(options: CliOptions, model: mg.LoadedModel) -> mg.DraftModel:
    """Load ``--draft-model`` (with ``--dtype``) and check that it shares the vocabulary."""
    try:
        draft = load_draft_model(options.draft_model, model, dtype=options.dtype)
    except ValueError as e:
        raise UsageError(f"argument --draft-model: {e}") from e
    return mg.DraftModel(draft, num_draft=options.num_draft or mg.DraftModel.num_draft)
