"""Compile a constraint against a model's tokenizer, once: the precompiled-grammar cache.

llguidance needs a token table (every id's bytes) built from the tokenizer, with the
model's **whole** EOS set (every one of them is allowed exactly when the grammar
accepts) and the model's real vocabulary size (the embedding can have more rows than
the tokenizer has tokens; the extra ids are never allowed). Building the table and
compiling a grammar cost milliseconds to a second, so both are cached: per tokenizer
object (weakly, so a dropped model frees its entries), keyed by (vocabulary size, EOS
set) for tables and by (grammar, vocabulary size, EOS set) for compiled grammars. A
call gets a deep copy of the compiled matcher, so a server compiles each schema once.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import llguidance

from mlx_gen.constraints.spec import Constraint

MAX_GRAMMARS_PER_TOKENIZER = 64


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level alphabet: character -> byte (the inverse of ``bytes_to_unicode``)."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = [b for b in range(256) if b not in printable]
    chars = {b: chr(b) for b in printable} | {b: chr(256 + n) for n, b in enumerate(extra)}
    return {c: b for b, c in chars.items()}


def _piece_bytes(piece: str, alphabet: dict[str, int] | None) -> bytes:
    """A vocabulary piece's bytes: byte-level BPE via its alphabet; else SentencePiece
    conventions (``<0xNN>`` is one byte, ``▁`` a space)."""
    if alphabet is not None:
        if all(c in alphabet for c in piece):
            return bytes(alphabet[c] for c in piece)
        return piece.encode("utf-8")
    if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        return bytes([int(piece[3:5], 16)])
    return piece.replace("\u2581", " ").encode("utf-8")


def _is_byte_level(tokenizer: Any) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend is not None and "ByteLevel" in json.dumps(
        json.loads(backend.to_str()).get("decoder")
    )


class TokenTable:
    """Every id's exact bytes, in llguidance's tokenizer protocol.

    The bytes are the ones the text layer renders (mlx_gen keeps a SentencePiece
    tokenizer's leading space under a constraint), so what the grammar matched is what
    the caller reads. ``__call__`` encodes text to ids whose bytes are exactly the text:
    the tokenizer's own encoding when it round-trips, else a greedy longest match.
    SentencePiece tokenizers prepend a space to every encoded text, so ``"a"`` encodes
    to ``"▁a"``; llguidance would then tokenize forced text with that extra space
    (llguidance#366) and allow ``"a"`` where the grammar needs ``" a"``.

    Args:
        tokenizer: A Hugging Face-style tokenizer (``convert_ids_to_tokens``, ``encode``).
    """

    def __init__(self, tokenizer: Any) -> None:
        size = len(tokenizer)
        alphabet = _byte_level_alphabet() if _is_byte_level(tokenizer) else None
        added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
        pieces = tokenizer.convert_ids_to_tokens(list(range(size)))
        special = {
            int(i) for i, t in added.items() if getattr(t, "special", False) and int(i) < size
        }
        special |= {
            i
            for i in (tokenizer.bos_token_id, tokenizer.eos_token_id)
            if i is not None and i < size
        }
        self.tokens: list[bytes] = []
        for i, piece in enumerate(pieces):
            if piece is None:
                self.tokens.append(b"")
            elif i in added or i in special:
                self.tokens.append(str(getattr(added.get(i), "content", piece)).encode("utf-8"))
            else:
                self.tokens.append(_piece_bytes(piece, alphabet))
        self.eos_token_id = tokenizer.eos_token_id
        self.bos_token_id = tokenizer.bos_token_id
        self.special_token_ids = sorted(special)
        self._tokenizer = tokenizer
        # Greedy fallback: bytes -> id, plain pieces preferred over byte-fallback ones.
        self._by_bytes: dict[bytes, int] = {}
        for i in sorted(range(size), key=lambda i: (pieces[i] or "").startswith("<0x")):
            if i not in special and self.tokens[i]:
                self._by_bytes.setdefault(self.tokens[i], i)
        self._longest = max(map(len, self._by_bytes), default=1)

    def pad_to(self, vocab_size: int) -> None:
        """Extend to the model's vocabulary: ids the tokenizer lacks become special
        placeholders, which no grammar text matches, so they are never allowed."""
        for i in range(len(self.tokens), vocab_size):
            self.tokens.append(f"<|mlx_gen_unused_{i}|>".encode())
            self.special_token_ids.append(i)

    def __call__(self, text: str | bytes) -> list[int]:
        data = text if isinstance(text, bytes) else text.encode("utf-8")
        ids = list(
            self._tokenizer.encode(data.decode("utf-8", "replace"), add_special_tokens=False)
        )
        if b"".join(self.tokens[i] for i in ids if i < len(self.tokens)) == data:
            return ids
        out, at = [], 0
        while at < len(data):
            for n in range(min(self._longest, len(data) - at), 0, -1):
                i = self._by_bytes.get(data[at : at + n])
                if i is not None:
                    out.append(i)
                    at += n
                    break
            else:  # a byte no token spells: skip it (llguidance falls back itself)
                at += 1
        return out


def build_token_table(
    tokenizer: Any, *, vocab_size: int, eos_token_ids: Sequence[int]
) -> llguidance.LLTokenizer:
    """llguidance's token table for ``tokenizer`` (an mlx-lm wrapper or a HF-style tokenizer).

    Args:
        tokenizer: The model's tokenizer (see :class:`TokenTable`).
        vocab_size: The model's vocabulary size (logits width, may exceed the tokenizer's).
        eos_token_ids: Every EOS id (non-empty).
    """
    inner = getattr(tokenizer, "_tokenizer", tokenizer)
    table = TokenTable(inner)
    table.pad_to(vocab_size)
    wrapper = llguidance.TokenizerWrapper(table)
    eos = [int(i) for i in eos_token_ids]
    return llguidance.LLTokenizer(wrapper, n_vocab=vocab_size, eos_token=eos)


@dataclass(frozen=True)
class CompiledConstraint:
    """A constraint compiled for one tokenizer, vocabulary and EOS set.

    Attributes:
        constraint: The source constraint.
        tokenizer: llguidance's token table.
        matcher: The pristine matcher; each call's ``Matcher`` copies it.
        vocab_size: The model's vocabulary size (bitmask width ``ceil(V / 32)`` words).
        eos_token_ids: The ids that end generation at an accepting state (may be empty,
            with ``ignore_eos``: then the grammar's EOS ids are never allowed).
        grammar_eos_ids: The ids llguidance treats as EOS.
    """

    constraint: Constraint
    tokenizer: llguidance.LLTokenizer
    matcher: llguidance.LLMatcher
    vocab_size: int
    eos_token_ids: tuple[int, ...]
    grammar_eos_ids: tuple[int, ...]


def matcher_error(matcher: llguidance.LLMatcher) -> str | None:
    """llguidance's error message for ``matcher`` (its first line), or ``None``."""
    if not matcher.is_error():
        return None
    message = matcher.get_error().split("\n<state>", 1)[0].strip()
    return message.splitlines()[0] if message else "unknown llguidance error"


def _check_first_mask(constraint: Constraint, matcher: llguidance.LLMatcher) -> None:
    """Refuse a grammar whose very first mask is already an error (it matches nothing)."""
    probe = matcher.deep_copy()
    probe.compute_bitmask()
    error = matcher_error(probe)
    if error is not None:
        raise ValueError(
            f"{constraint!r} cannot be used: llguidance fails on its first token ({error}); "
            "the grammar matches no text it can generate (a JSON Schema that only refers "
            'to itself, such as {"$ref": "#"}, is one way to get here)'
        )


class GrammarCache:
    """Token tables and compiled grammars, per tokenizer object (thread-safe).

    Args:
        max_grammars: Compiled grammars kept per tokenizer (least recently used dropped).
    """

    def __init__(self, max_grammars: int = MAX_GRAMMARS_PER_TOKENIZER) -> None:
        self.max_grammars = max_grammars
        self._tables: weakref.WeakKeyDictionary[Any, dict] = weakref.WeakKeyDictionary()
        self._grammars: weakref.WeakKeyDictionary[Any, OrderedDict] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def table(
        self, tokenizer: Any, vocab_size: int, eos: tuple[int, ...]
    ) -> llguidance.LLTokenizer:
        """The (cached) token table of ``tokenizer``."""
        with self._lock:
            tables = self._tables.setdefault(tokenizer, {})
            if (vocab_size, eos) not in tables:
                tables[(vocab_size, eos)] = build_token_table(
                    tokenizer, vocab_size=vocab_size, eos_token_ids=eos
                )
            return tables[(vocab_size, eos)]

    def matcher(
        self, constraint: Constraint, tokenizer: Any, vocab_size: int, eos: tuple[int, ...]
    ) -> llguidance.LLMatcher:
        """The (cached) pristine matcher of ``constraint`` for ``tokenizer``."""
        table = self.table(tokenizer, vocab_size, eos)
        key = (constraint.grammar, vocab_size, eos)
        with self._lock:
            grammars = self._grammars.setdefault(tokenizer, OrderedDict())
            if key in grammars:
                grammars.move_to_end(key)
                return grammars[key]
        matcher = llguidance.LLMatcher(table, constraint.grammar, log_level=0)
        if matcher.is_error():
            raise ValueError(f"{constraint!r} cannot be compiled: {matcher_error(matcher)}")
        _check_first_mask(constraint, matcher)
        with self._lock:
            grammars[key] = matcher
            while len(grammars) > self.max_grammars:
                grammars.popitem(last=False)
        return matcher


DEFAULT_CACHE = GrammarCache()


def compile_constraint(
    constraint: Constraint,
    tokenizer: Any,
    *,
    vocab_size: int,
    eos_token_ids: Sequence[int],
    fallback_eos_ids: Sequence[int] = (),
    cache: GrammarCache = DEFAULT_CACHE,
) -> CompiledConstraint:
    """Compile ``constraint`` for a model (cached; see the module docstring).

    Args:
        constraint: From :mod:`mlx_gen.constraints.spec`.
        tokenizer: The model's tokenizer.
        vocab_size: The model's vocabulary size.
        eos_token_ids: The call's EOS set; all of them are allowed at accepting states.
        fallback_eos_ids: Ids llguidance treats as EOS when ``eos_token_ids`` is empty
            (``ignore_eos``); they are then never allowed.
        cache: Where compiled grammars live.

    Raises:
        ValueError: No EOS id at all, the grammar fails to compile for this tokenizer,
            or llguidance already errors on its first token mask.
    """
    if not isinstance(constraint, Constraint):
        raise ValueError(
            f"constraint={constraint!r} is invalid (expected JsonSchema, JsonObject, "
            "Regex, Grammar or Choice from mlx_gen)"
        )
    stop = tuple(dict.fromkeys(int(i) for i in eos_token_ids))
    grammar_eos = stop or tuple(dict.fromkeys(int(i) for i in fallback_eos_ids))
    if not grammar_eos:
        raise ValueError(
            "a constraint needs an EOS id to end on: the model has none; pass eos_token_ids="
        )
    matcher = cache.matcher(constraint, tokenizer, vocab_size, grammar_eos)
    table = cache.table(tokenizer, vocab_size, grammar_eos)
    return CompiledConstraint(constraint, table, matcher, vocab_size, stop, grammar_eos)
