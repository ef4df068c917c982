"""GGUF files written by tests: logits against a numpy forward pass, quantized layouts,
tokenizers against independent references, and the errors a bad file gives."""

from __future__ import annotations

import io
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
import sentencepiece as spm
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from mlx_gen.loading.gguf.reader import gguf_generation_config, read_gguf
from mlx_gen.loading.loader import load
from tests.checkpoints import CHATML, SPECIALS, llama_config, random_weights
from tests.gguf_writer import Tensor, float_tensor, permute_for_gguf, quantize, write_gguf
from tests.reference_llama import forward

IDS = [5, 17, 42, 99, 7, 260, 3, 11, 300, 64]
CORPUS = [
    "The quick brown fox jumps over the lazy dog. The dog sleeps.",
    "Hello world! Hello there, world of tokens and tokenizers.",
    "Numbers: 12345, 2024-01-01, 3.14159 and 1,000,000 are here.",
    "def forward(self, x):\n    return self.linear(x) + 1\n",
    "Unicode: café naïve résumé, 日本語, emoji 😀 and more.",
] * 4
STRINGS = [
    "Hello world!",
    " leading space",
    "trailing  ",
    "two  spaces\tand\ttabs\n\nnewlines",
    "digits 12345 and  12",
    "café naïve",
    "日本語のテキスト 😀👍🏽",
    "I'm sure they'll see",
    "def f(x):\n    return x",
    "",
    "   ",
]
# Hugging Face module name -> GGUF name, written independently of mlx_gen's table.
HF_TO_GGUF = {
    "model.embed_tokens": "token_embd",
    "model.norm": "output_norm",
    "lm_head": "output",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


@cache
def byte_level_bpe() -> tuple[Tokenizer, list[str], list[str]]:
    """A byte-level BPE trained on ``CORPUS``: (reference tokenizer, tokens, merges)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=SPECIALS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    model = json.loads(tok.to_str())["model"]
    tokens = sorted(model["vocab"], key=model["vocab"].get)
    return tok, tokens, [" ".join(m) for m in model["merges"]]


def byte_level_metadata(pre: str = "gpt2") -> dict[str, Any]:
    _, tokens, merges = byte_level_bpe()
    return {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": pre,
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.token_type": [3 if t in SPECIALS else 1 for t in tokens],
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.padding_token_id": 0,
        "tokenizer.ggml.add_bos_token": False,
        "tokenizer.chat_template": CHATML,
    }


def tiny_config(arch: str = "llama", **changes: Any) -> dict[str, Any]:
    vocab = len(byte_level_bpe()[1])
    return llama_config(
        model_type=arch, hidden_size=64, intermediate_size=128, vocab_size=vocab, **changes
    )


def gguf_order(w: np.ndarray, heads: int) -> np.ndarray:
    return permute_for_gguf(w, heads) if heads else w


def write_model(
    path: Path,
    config: dict[str, Any],
    *,
    linear: str = "F32",
    embed: str = "F32",
    tokenizer: dict[str, Any] | None = None,
    extra: dict[str, Tensor] | None = None,
) -> dict[str, np.ndarray]:
    """Write ``config``'s random weights as GGUF; return the HF-order weights as stored
    (dequantized when quantized), for the reference forward pass."""
    arch = config["model_type"]
    nh, nkv = config["num_attention_heads"], config["num_key_value_heads"]
    metadata = {
        "general.architecture": arch,
        f"{arch}.embedding_length": config["hidden_size"],
        f"{arch}.block_count": config["num_hidden_layers"],
        f"{arch}.feed_forward_length": config["intermediate_size"],
        f"{arch}.attention.head_count": nh,
        f"{arch}.attention.head_count_kv": nkv,
        f"{arch}.attention.layer_norm_rms_epsilon": config["rms_norm_eps"],
        f"{arch}.rope.freq_base": config["rope_theta"],
        f"{arch}.context_length": config["max_position_embeddings"],
        f"{arch}.rope.dimension_count": config["hidden_size"] // nh,
        **(tokenizer or byte_level_metadata()),
    }
    stored, tensors = {}, {}
    for name, w in random_weights(config).items():
        stem, suffix = name.rsplit(".", 1)
        block = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", stem)
        gguf = f"blk.{block[1]}.{HF_TO_GGUF[block[2]]}" if block else HF_TO_GGUF[stem]
        # llama.cpp permutes Llama's q/k rows into interleaved RoPE pairs; Qwen2 stays as is.
        heads = {"attn_q": nh, "attn_k": nkv}.get(gguf.rsplit(".", 1)[-1], 0) * (arch == "llama")
        ggml_type = embed if gguf == "token_embd" else linear if w.ndim == 2 else "F32"
        if ggml_type in ("F32", "F16"):
            stored[name] = w.astype(np.float16 if ggml_type == "F16" else np.float32)
            tensors[f"{gguf}.{suffix}"] = float_tensor(gguf_order(w, heads), ggml_type)
        else:
            stored[name] = quantize(w, ggml_type)[1]
            tensors[f"{gguf}.{suffix}"] = quantize(gguf_order(w, heads), ggml_type)[0]
    write_gguf(path, metadata, {**tensors, **(extra or {})})
    return stored


def logits_of(model: nn.Module, ids: list[int]) -> np.ndarray:
    out = model(mx.array([ids]))
    mx.eval(out)
    return np.array(out[0].astype(mx.float32))


CASES = {
    "llama_untied": tiny_config(),
    "llama_tied": tiny_config(tie_word_embeddings=True),
    "llama_f16": tiny_config(),
    "qwen2_bias_tied": tiny_config("qwen2", tie_word_embeddings=True),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_float_logits_match_numpy_reference(tmp_path, name):
    config, path = CASES[name], tmp_path / f"{name}.gguf"
    kind = "F16" if name.endswith("f16") else "F32"
    weights = write_model(path, config, linear=kind, embed=kind)
    loaded = load(path)
    diff = np.abs(logits_of(loaded.model, IDS) - forward(weights, config, IDS)).max()
    assert diff < 1e-4
    assert loaded.config["tie_word_embeddings"] == config["tie_word_embeddings"]
    assert loaded.config["rope_traditional"] == (config["model_type"] == "llama")


@pytest.mark.parametrize("kind", ["Q8_0", "Q4_0", "Q4_1"])
def test_quantized_linears_match_dequantized_reference(tmp_path, kind):
    config, path = tiny_config(), tmp_path / "q.gguf"
    weights = write_model(path, config, linear=kind)  # Untied: lm_head is `kind` too.
    loaded = load(path)
    bits = 8 if kind == "Q8_0" else 4
    quantization = loaded.config["quantization"]
    assert {k: quantization[k] for k in ("group_size", "bits")} == {"group_size": 32, "bits": bits}
    assert quantization["lm_head"] == {"group_size": 32, "bits": bits}
    layer = loaded.model.model.layers[1]
    for module in [layer.self_attn.q_proj, layer.mlp.down_proj, loaded.model.lm_head]:
        assert isinstance(module, nn.QuantizedLinear)
        assert (module.bits, module.group_size) == (bits, 32)
    logits = logits_of(loaded.model, IDS)
    assert np.abs(logits - forward(weights, config, IDS)).max() < 1e-4
    if kind == "Q8_0":  # Close to the unquantized model too.
        float_logits = forward(random_weights(config), config, IDS)
        assert np.abs(logits - float_logits).max() < 0.1 * np.abs(float_logits).max()


def test_bits_differ_per_layer(tmp_path):
    # As in SmolLM2's GGUF: an 8-bit embedding (tied, so also the output) and 4-bit linears.
    config, path = tiny_config(tie_word_embeddings=True), tmp_path / "q.gguf"
    weights = write_model(path, config, linear="Q4_1", embed="Q8_0")
    loaded = load(path)
    quantization = loaded.config["quantization"]
    assert (quantization["group_size"], quantization["bits"]) == (32, 4)
    assert quantization["model.embed_tokens"] == {"group_size": 32, "bits": 8}
    assert loaded.model.model.layers[0].mlp.up_proj.bits == 4
    assert isinstance(loaded.model.model.embed_tokens, nn.QuantizedEmbedding)
    assert loaded.model.model.embed_tokens.bits == 8
    # Exact precision: float32 scales, so the embedding rows are exact too.
    assert np.abs(logits_of(loaded.model, IDS) - forward(weights, config, IDS)).max() < 1e-4


def test_config_generation_config_and_files(tmp_path):
    path = tmp_path / "m.gguf"
    write_model(path, tiny_config(), linear="Q4_0")
    checkpoint = read_gguf(path)
    config = checkpoint.config
    expected = {
        "model_type": "llama",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": 256,
        "vocab_size": len(byte_level_bpe()[1]),
        "tie_word_embeddings": False,
        "rope_traditional": True,
    }
    assert {k: config[k] for k in expected} == expected
    assert (config["quantization"]["group_size"], config["quantization"]["bits"]) == (32, 4)
    assert checkpoint.generation_config == {"eos_token_id": 2, "bos_token_id": 1, "pad_token_id": 0}
    assert checkpoint.files["config.json"] == f"{path} (GGUF metadata)"
    assert checkpoint.weights["model.layers.0.self_attn.q_proj.weight"].dtype == mx.uint32
    loaded = load(path)
    assert loaded.generation_config.eos_token_ids == (2,)
    assert loaded.generation_config.bos_token_id == 1


@pytest.mark.parametrize("pre", ["gpt2", "smollm"])
def test_byte_level_tokenizer_matches_reference(tmp_path, pre):
    reference, tokens, _ = byte_level_bpe()
    if pre == "smollm":  # SmolLM2's tokenizer.json (and llama.cpp) split digits one by one.
        reference = Tokenizer.from_str(reference.to_str())
        reference.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False),
            ]
        )
    path = tmp_path / "t.gguf"
    write_model(path, tiny_config(), tokenizer=byte_level_metadata(pre))
    tok = read_gguf(path).tokenizer
    for text in [*STRINGS, *CORPUS[:5], "<|im_start|>user\nhi<|im_end|>"]:
        ids = tok.encode(text, add_special_tokens=True)
        assert ids == reference.encode(text).ids, text
        assert tok.decode(ids) == text
        detokenizer = tok.detokenizer  # Streams multi-byte characters whole.
        for i in ids:
            detokenizer.add_token(i)
        detokenizer.finalize()
        # mlx-lm's BPEStreamingDetokenizer drops one leading space of the first segment.
        assert detokenizer.text == (text[1:] if text.startswith(" ") else text)
    assert tok.encode("<|im_end|>") == [tokens.index("<|im_end|>")] == [2]
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (1, 2, 0)


def test_smollm_digit_split_differs_from_gpt2(tmp_path):
    # Proves the pre-tokenizer table is applied: the trained vocab merges digits.
    texts = ["12345", " 2024", "3.14159"]
    encodings = {}
    for pre in ["gpt2", "smollm"]:
        write_model(tmp_path / f"{pre}.gguf", tiny_config(), tokenizer=byte_level_metadata(pre))
        tok = read_gguf(tmp_path / f"{pre}.gguf").tokenizer
        encodings[pre] = [tok.encode(t) for t in texts]
    assert encodings["gpt2"] != encodings["smollm"]
    assert all(len(ids) == len(t) for ids, t in zip(encodings["smollm"], texts, strict=True))


def test_chat_template_renders_like_transformers(tmp_path):
    path = tmp_path / "c.gguf"
    write_model(path, tiny_config())
    tok = load(path).tokenizer
    messages = [{"role": "user", "content": "Hi there"}]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"
    ids = tok.apply_chat_template(messages, add_generation_prompt=True)
    assert ids == tok.encode(text, add_special_tokens=False)
    assert ids[0] == 1 and ids.count(2) == 1


def sentencepiece_vocab() -> tuple[spm.SentencePieceProcessor, dict[str, Any]]:
    """A SentencePiece BPE model trained like Llama's (byte fallback, no normalization)."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 5),
        model_writer=model,
        vocab_size=400,
        model_type="bpe",
        byte_fallback=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        hard_vocab_limit=False,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    n = sp.get_piece_size()
    kinds = [
        2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i) else 1
        for i in range(n)
    ]
    return sp, {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": [sp.id_to_piece(i) for i in range(n)],
        "tokenizer.ggml.scores": [sp.get_score(i) for i in range(n)],
        "tokenizer.ggml.token_type": kinds,
        "tokenizer.ggml.unknown_token_id": 0,
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
    }


def test_sentencepiece_tokenizer_matches_sentencepiece(tmp_path):
    sp, metadata = sentencepiece_vocab()
    path = tmp_path / "spm.gguf"
    config = llama_config(hidden_size=64, intermediate_size=128, vocab_size=sp.get_piece_size())
    write_model(path, config, tokenizer=metadata)
    tok = read_gguf(path).tokenizer
    for text in STRINGS:  # BOS is added by default for SentencePiece vocabularies.
        ids = tok.encode(text)
        assert ids == [1, *sp.encode(text)], text
        assert tok.decode(ids, skip_special_tokens=True) == sp.decode(ids[1:]) == text
        detokenizer = tok.detokenizer
        for i in ids[1:]:
            detokenizer.add_token(i)
        detokenizer.finalize()
        assert detokenizer.text == text
    # As llama.cpp: text after a special token gets the leading space too.
    assert tok.encode("<s>hi", add_special_tokens=False) == [1, *sp.encode("hi")]


def test_truncated_file_names_the_file(tmp_path):
    path = tmp_path / "m.gguf"
    write_model(path, tiny_config(), linear="Q8_0")
    data = path.read_bytes()
    for cut in [0, 10, 200, len(data) // 2, len(data) - 5]:
        cut_path = tmp_path / f"cut{cut}.gguf"
        cut_path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=re.escape(str(cut_path))) as info:
            read_gguf(cut_path)
        assert "truncated or corrupt" in str(info.value)


def test_unsupported_architecture_lists_supported(tmp_path):
    path = tmp_path / "m.gguf"
    write_model(path, tiny_config(arch="gemma"))
    with pytest.raises(
        ValueError,
        match="'gemma' is not supported; supported GGUF architectures: llama, qwen2, qwen3, ",
    ):
        load(path)


def test_unknown_tensor_name_is_named(tmp_path):
    path = tmp_path / "m.gguf"
    extra = {"blk.0.mystery.weight": float_tensor(np.ones(8, np.float32))}
    write_model(path, tiny_config(), extra=extra)
    with pytest.raises(
        ValueError, match=r"unsupported tensor name\(s\) \['blk.0.mystery.weight'\]"
    ):
        load(path)


def test_unsupported_tensor_type_names_tensor_and_type(tmp_path):
    path = tmp_path / "m.gguf"
    i_quant = Tensor("IQ2_XXS", (4, 256), bytes(66 * 4))
    write_model(path, tiny_config(), extra={"blk.0.attn_q.weight": i_quant})
    with pytest.raises(
        ValueError,
        match=r"tensor blk.0.attn_q.weight has type IQ2_XXS.*"
        r"supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, "
        "IQ4_NL, IQ4_XS",
    ):
        read_gguf(path)


def test_unsupported_pre_tokenizer_is_named(tmp_path):
    path = tmp_path / "m.gguf"
    write_model(path, tiny_config(), tokenizer=byte_level_metadata("mystery"))
    with pytest.raises(ValueError, match="tokenizer.ggml.pre='mystery' is not supported"):
        read_gguf(path)


def test_end_of_turn_ids_join_eos():
    metadata = {
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.eot_token_id": 3,
        "tokenizer.ggml.eom_token_id": 2,
        "tokenizer.ggml.bos_token_id": 0,
    }
    assert gguf_generation_config(metadata) == {"eos_token_id": [2, 3], "bos_token_id": 0}
