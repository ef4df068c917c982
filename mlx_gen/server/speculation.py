"""Speculative decoding in the server: the start-up flags and each request's choice.

A request's ``speculative`` field (an mlx_gen extension on every endpoint) picks the
drafter, overriding the server's default:

* ``{"prompt_lookup": N}``: n-gram prompt lookup, at most ``N`` drafts a round;
* ``{"draft": N}``: the server's ``--draft-model``, at most ``N`` drafts a round;
* ``false``: no speculation; absent or ``null``: the server's default.

``N`` is 1..:data:`MAX_DRAFT`. The server's default comes from ``--prompt-lookup N`` or
``--draft-model PATH`` (with ``--num-draft N``). A request drafts only while it is the
only one decoding (:mod:`mlx_gen.batch.speculate`), and only where the measured cost
model says it pays, so the output is the one without speculation (greedy: token for
token) and never slower by more than the cost model's probe. Refused by name: a draft
without ``--draft-model`` and a model whose KV cache cannot drop rejected positions
(sliding-window layers).

The distributed server (``ranked``) speculates with prompt lookup only, and its drafters
draft whenever the lookup finds drafts (``measure_cost=False``): the cost model decides
from wall-clock timings, which differ per rank, while the lookup, the back-off and the
acceptance are functions of the tokens alone, so every rank takes the same rounds. The
drafter travels to the other ranks as data (:mod:`mlx_gen.server.wire`). A draft model
(``--draft-model``, ``{"draft": N}``) is refused there by name: each rank would run its
own draft model, which is not supported yet.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlx_gen.batch.speculate import check_speculative_model
from mlx_gen.drafters import DraftModel, PromptLookup
from mlx_gen.loading.draft_model import load_draft_model
from mlx_gen.loading.loader import LoadedModel
from mlx_gen.server.errors import ApiError
from mlx_gen.server.ranks import RankFlagError

MAX_DRAFT = 64
"""The most tokens a request may ask to draft per round."""


class SpeculativeRequest(BaseModel):
    """A request's ``speculative`` object: exactly one of ``prompt_lookup`` and ``draft``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    prompt_lookup: int | None = Field(default=None, ge=1, le=MAX_DRAFT)
    draft: int | None = Field(default=None, ge=1, le=MAX_DRAFT)

    @model_validator(mode="after")
    def _one(self) -> SpeculativeRequest:
        if (self.prompt_lookup is None) == (self.draft is None):
            raise ValueError('give exactly one of "prompt_lookup" and "draft"')
        return self


#: The request field: an object, ``false`` (off) or ``null`` (the server's default).
SpeculativeField = SpeculativeRequest | Literal[False] | None


@dataclass(frozen=True)
class ServerSpeculation:
    """What the server can speculate with.

    Attributes:
        default: The drafter of requests that do not choose (``None``: no speculation).
        draft_model: ``--draft-model``, loaded (``None``: requests cannot ask for a draft).
        num_draft: ``--num-draft`` (the draft model's default draft length).
        refused: Why no request may speculate here (``None``: they may).
        measure_cost: Requests' drafters draft only where the measured cost pays
            (``False``: whenever there are drafts; for tests, measurements and ranks).
        draft_refused: Why no request may draft with a model here (``None``: it may
            where ``draft_model`` is loaded); prompt lookup stays available.
    """

    default: PromptLookup | DraftModel | None = None
    draft_model: LoadedModel | None = None
    num_draft: int = DraftModel.num_draft
    refused: str | None = None
    measure_cost: bool = True
    draft_refused: str | None = None

    def drafter(self, field: SpeculativeField) -> PromptLookup | DraftModel | None:
        """The drafter for a request's ``speculative`` field.

        Raises:
            ApiError: 400 naming ``speculative`` when it cannot be served here.
        """
        if field is False or (field is None and self.default is None):
            return None
        if self.refused is not None:
            raise ApiError(
                400, f"speculative is not available: {self.refused}", param="speculative"
            )
        if field is None:
            return self.default
        if field.prompt_lookup is not None:
            return PromptLookup(num_draft=field.prompt_lookup, measure_cost=self.measure_cost)
        if self.draft_refused is not None:
            raise ApiError(
                400,
                f'speculative={{"draft": {field.draft}}} is not available: '
                f'{self.draft_refused}; ask for {{"prompt_lookup": N}}',
                param="speculative",
            )
        if self.draft_model is None:
            raise ApiError(
                400,
                f'speculative={{"draft": {field.draft}}} needs a draft model: start the '
                'server with --draft-model PATH, or ask for {"prompt_lookup": N}',
                param="speculative",
            )
        return DraftModel(self.draft_model, num_draft=field.draft, measure_cost=self.measure_cost)


RANKS_REFUSE_DRAFT = (
    "the distributed server drafts with prompt lookup only (each rank would run its own "
    "draft model; not supported yet)"
)
"""Why a draft model is refused under ranks."""


def default_speculation(model: LoadedModel, *, ranked: bool = False) -> ServerSpeculation:
    """No default drafter; requests may ask for prompt lookup where ``model`` can verify.

    ``ranked``: the distributed server's (drafting whenever lookup finds drafts, no draft
    model; see the module docstring).
    """
    try:
        check_speculative_model(model)
    except ValueError as err:
        return ServerSpeculation(refused=str(err))
    if ranked:
        return ServerSpeculation(measure_cost=False, draft_refused=RANKS_REFUSE_DRAFT)
    return ServerSpeculation()


def add_speculation_flags(p: argparse.ArgumentParser) -> None:
    """Add ``--prompt-lookup``, ``--draft-model`` and ``--num-draft``."""
    g = p.add_argument_group(
        "speculative decoding",
        "Drafts while one request decodes alone, where the measured cost pays; the "
        "output is unchanged. A request's own 'speculative' field overrides the default.",
    )
    source = g.add_mutually_exclusive_group()
    lookup = f"default: prompt lookup, up to N (1..{MAX_DRAFT}) drafts a round"
    draft = "load this smaller model (same vocabulary) and draft with it by default"
    num = f"the draft model's drafts per round (1..{MAX_DRAFT}; default: {DraftModel.num_draft})"
    source.add_argument("--prompt-lookup", type=int, metavar="N", help=lookup)
    source.add_argument("--draft-model", metavar="PATH", help=draft)
    g.add_argument("--num-draft", type=int, metavar="N", help=num)


def open_speculation(
    model: LoadedModel, args: argparse.Namespace, *, ranked: bool
) -> ServerSpeculation:
    """The server's :class:`ServerSpeculation` from its flags.

    Raises:
        ValueError: A value out of range, ``--num-draft`` without ``--draft-model``, a
            draft model of another vocabulary size, a model that cannot speculate with a
            flag asking for it (the message names the flag).
        RankFlagError: ``--draft-model`` under ranks.
    """
    for flag, value in (("--prompt-lookup", args.prompt_lookup), ("--num-draft", args.num_draft)):
        if value is not None and not 1 <= value <= MAX_DRAFT:
            raise ValueError(f"{flag} {value} is invalid (expected 1..{MAX_DRAFT})")
    if args.num_draft is not None and args.draft_model is None:
        raise ValueError("--num-draft needs --draft-model (it is the draft model's length)")
    if ranked and args.draft_model is not None:
        raise RankFlagError(f"--draft-model: {RANKS_REFUSE_DRAFT}")
    if args.prompt_lookup is None and args.draft_model is None:
        return default_speculation(model, ranked=ranked)
    check_speculative_model(model)
    if args.draft_model is None:
        lookup = PromptLookup(num_draft=args.prompt_lookup, measure_cost=not ranked)
        if ranked:
            return ServerSpeculation(lookup, measure_cost=False, draft_refused=RANKS_REFUSE_DRAFT)
        return ServerSpeculation(default=lookup)
    draft = _load_draft(model, args)
    num = args.num_draft or DraftModel.num_draft
    return ServerSpeculation(DraftModel(draft, num_draft=num), draft, num)


def _load_draft(model: LoadedModel, args: argparse.Namespace) -> LoadedModel:
    try:
        return load_draft_model(args.draft_model, model, dtype=getattr(args, "dtype", None))
    except ValueError as err:
        raise ValueError(f"--draft-model: {err}") from err
