"""Build the tokenizer a GGUF file describes in its ``tokenizer.ggml.*`` metadata.

A GGUF carries no ``tokenizer.json``: it stores the vocabulary, merges or scores, token
types and special ids. Two kinds are built with the ``tokenizers`` library, following
transformers' GGUF converter (``transformers.integrations.gguf``) and llama.cpp:

* ``gpt2``: byte-level BPE from ``tokens`` + ``merges``, split before BPE by the regex
  that ``tokenizer.ggml.pre`` names (:data:`PRE_TOKENIZERS`);
* ``llama``: SentencePiece-style BPE with byte fallback, merges derived from ``scores``.

Control tokens (type 3) become special tokens, user-defined ones (type 4) added tokens.
The result is a ``PreTrainedTokenizerFast`` (so chat templates render as transformers
renders them) in mlx-lm's ``TokenizerWrapper`` with the matching streaming detokenizer.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from mlx_lm.tokenizer_utils import (
    BPEStreamingDetokenizer,
    SPMStreamingDetokenizer,
    TokenizerWrapper,
)
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
)
from transformers import PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import bytes_to_unicode

CONTROL, USER_DEFINED = 3, 4  # llama.cpp token types.

_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _regex(pattern: str) -> list[pre_tokenizers.PreTokenizer]:
    return [
        pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ]


# tokenizer.ggml.pre -> the pre-tokenizers, as llama.cpp's llama-vocab.cpp splits text.
# "gpt2"/"default": GPT-2's regex (built into ByteLevel); "smollm" and the StarCoder family
# first split every digit off (as SmolLM2's own tokenizer.json does with Digits).
_GPT2 = [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
_DIGITS_GPT2 = [pre_tokenizers.Digits(individual_digits=True), *_GPT2]
PRE_TOKENIZERS: dict[str, list[pre_tokenizers.PreTokenizer]] = {
    "default": _GPT2,
    "gpt2": _GPT2,
    "gpt-2": _GPT2,
    "mpt": _GPT2,
    "olmo": _GPT2,
    "smollm": _DIGITS_GPT2,
    "starcoder": _DIGITS_GPT2,
    "refact": _DIGITS_GPT2,
    "codeshell": _DIGITS_GPT2,
    "llama3": _regex(_LLAMA3_SPLIT),
    "llama-v3": _regex(_LLAMA3_SPLIT),
    "llama-bpe": _regex(_LLAMA3_SPLIT),
    "smaug-bpe": _regex(_LLAMA3_SPLIT),
    "qwen2": _regex(_QWEN2_SPLIT),
    "deepseek-r1-qwen": _regex(_QWEN2_SPLIT),
}


def _byte_level_model(metadata: dict[str, Any], path: Path) -> Tokenizer:
    byte_char = bytes_to_unicode()  # byte value -> its character in GPT-2's byte alphabet
    alphabet = set(byte_char.values())
    # A token outside the byte alphabet (a llama.cpp mislabel) is spelled byte by byte.
    vocab = {
        t if set(t) <= alphabet else "".join(byte_char[b] for b in t.encode("utf-8")): i
        for i, t in enumerate(metadata["tokenizer.ggml.tokens"])
    }
    merges = [tuple(m.split(" ", 1)) for m in metadata.get("tokenizer.ggml.merges", [])]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    pre = metadata.get("tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZERS:
        raise ValueError(
            f"{path}: tokenizer.ggml.pre={pre!r} is not supported; supported: "
            f"{', '.join(PRE_TOKENIZERS)}"
        )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(PRE_TOKENIZERS[pre])
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def spm_merges(tokens: list[str], scores: list[float]) -> list[tuple[str, str]]:
    """BPE merges implied by a SentencePiece vocabulary: every split of a token into two
    tokens, best-scored result first (as transformers' ``generate_merges``)."""
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = []
    for token, score in zip(tokens, scores, strict=True):
        pairs = [
            (token[:i], token[i:])
            for i in range(1, len(token))
            if token[:i] in vocab and token[i:] in vocab
        ]
        pairs.sort(key=lambda p: (vocab[p[0]], vocab[p[1]]))
        merges += [(score, left, right) for left, right in pairs]
    merges.sort(key=lambda m: (m[0], len(m[1]), len(m[2])), reverse=True)
    return [(left, right) for _, left, right in merges]


def _sentencepiece_model(metadata: dict[str, Any], add_prefix: bool, path: Path) -> Tokenizer:
    tokens = metadata["tokenizer.ggml.tokens"]
    scores = metadata.get("tokenizer.ggml.scores") or [0.0] * len(tokens)
    if len(scores) != len(tokens):
        raise ValueError(
            f"{path}: tokenizer.ggml.scores has {len(scores)} entries for {len(tokens)} tokens"
        )
    unk_id = metadata.get("tokenizer.ggml.unknown_token_id")
    tokenizer = Tokenizer(
        models.BPE(
            vocab={t: i for i, t in enumerate(tokens)},
            merges=spm_merges(tokens, scores),
            unk_token=tokens[unk_id] if unk_id is not None else None,
            fuse_unk=True,
            byte_fallback=True,
        )
    )
    if add_prefix:
        # As llama.cpp: a space before the text and after every special/added token, then
        # spaces become "▁". (Metaspace would not add "▁" before a leading space, unlike
        # SentencePiece; this normalizer runs on each stretch between added tokens.)
        tokenizer.normalizer = normalizers.Sequence(
            [normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")]
        )
    else:
        tokenizer.normalizer = normalizers.Replace(" ", "▁")
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    tokenizer.decoder = decoders.Sequence(
        steps + ([decoders.Strip(content=" ", left=1)] if add_prefix else [])
    )
    return tokenizer


def _add_token_types(tokenizer: Tokenizer, metadata: dict[str, Any]) -> None:
    """Control tokens become special, user-defined ones added tokens (matched whole)."""
    tokens = metadata["tokenizer.ggml.tokens"]
    types = metadata.get("tokenizer.ggml.token_type") or []
    vocab = tokenizer.get_vocab()
    picked = [
        (t, ty) for t, ty in zip(tokens, types, strict=False) if ty in (CONTROL, USER_DEFINED)
    ]
    # Only tokens the vocabulary holds as spelled; others would get new ids.
    tokenizer.add_special_tokens(
        [
            AddedToken(t, special=True, normalized=False)
            for t, ty in picked
            if ty == CONTROL and t in vocab
        ]
    )
    tokenizer.add_tokens(
        [
            AddedToken(t, special=False, normalized=False)
            for t, ty in picked
            if ty == USER_DEFINED and t in vocab
        ]
    )


def read_gguf_tokenizer(metadata: dict[str, Any], path: Path) -> TokenizerWrapper:
    """Build the tokenizer described by GGUF ``metadata`` (plain Python values).

    Args:
        metadata: The file's metadata; ``tokenizer.ggml.model`` must be ``gpt2`` or ``llama``.
        path: The file, for messages.

    Returns:
        mlx-lm's ``TokenizerWrapper`` around a ``PreTrainedTokenizerFast`` with the special
        tokens, ``add_bos_token``/``add_eos_token`` and ``tokenizer.chat_template``.

    Raises:
        ValueError: No vocabulary, an unsupported tokenizer model or pre-tokenizer, or a
            vocabulary the ``tokenizers`` library rejects (a corrupt file); the file is named.
    """
    try:
        return _build(metadata, path)
    except ValueError:
        raise
    except Exception as e:  # tokenizers/transformers raise their own types on bad vocabularies.
        raise ValueError(
            f"{path}: the tokenizer in the GGUF metadata is inconsistent ({type(e).__name__}: "
            f"{e}); the file is corrupt, download it again"
        ) from None


def _build(metadata: dict[str, Any], path: Path) -> TokenizerWrapper:
    """:func:`read_gguf_tokenizer` without the error translation."""
    kind = metadata.get("tokenizer.ggml.model")
    if not metadata.get("tokenizer.ggml.tokens"):
        raise ValueError(f"{path}: the GGUF metadata has no tokenizer.ggml.tokens")
    add_prefix = bool(metadata.get("tokenizer.ggml.add_space_prefix", True))
    if kind == "gpt2":
        tokenizer, detokenizer = _byte_level_model(metadata, path), BPEStreamingDetokenizer
    elif kind == "llama":
        tokenizer = _sentencepiece_model(metadata, add_prefix, path)
        detokenizer = partial(SPMStreamingDetokenizer, trim_space=add_prefix)
    else:
        raise ValueError(
            f"{path}: tokenizer.ggml.model={kind!r} is not supported; supported: "
            "gpt2 (byte-level BPE), llama (SentencePiece)"
        )
    _add_token_types(tokenizer, metadata)
    tokens = metadata["tokenizer.ggml.tokens"]
    special = {}
    for name, key in [
        ("bos_token", "bos"),
        ("eos_token", "eos"),
        ("unk_token", "unknown"),
        ("pad_token", "padding"),
    ]:
        token_id = metadata.get(f"tokenizer.ggml.{key}_token_id")
        if isinstance(token_id, int) and 0 <= token_id < len(tokens):
            special[name] = tokens[token_id]
    hf_tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        # llama.cpp adds BOS to SentencePiece vocabularies unless the file says otherwise.
        add_bos_token=bool(metadata.get("tokenizer.ggml.add_bos_token", kind == "llama")),
        add_eos_token=bool(metadata.get("tokenizer.ggml.add_eos_token", False)),
        clean_up_tokenization_spaces=False,
        **special,
    )
    hf_tokenizer.chat_template = metadata.get("tokenizer.chat_template")
    return TokenizerWrapper(hf_tokenizer, detokenizer)
