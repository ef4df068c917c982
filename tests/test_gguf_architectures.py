"""One tiny random model per GGUF architecture, written both as a Hugging Face folder and
as a GGUF file (with llama.cpp's ``gguf.GGUFWriter`` and llama.cpp's converter
conventions: Llama q/k rows permuted, Gemma norms stored as ``1 + w``, no ``output``
tensor when tied); both must give the same logits. The name table here is written
from llama.cpp's ``gguf-py/gguf/tensor_mapping.py``, independently of mlx_gen's."""

from __future__ import annotations

import json
import re
from typing import Any

import gguf
import mlx.core as mx
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize
from mlx.utils import tree_flatten
from safetensors.numpy import save_file

from mlx_gen.cli.main import main as cli_main
from mlx_gen.convert.main import convert
from mlx_gen.loading.architecture import model_classes
from mlx_gen.loading.loader import load
from tests.checkpoints import write_tokenizer
from tests.gguf_blocks import random_blocks
from tests.gguf_writer import permute_for_gguf
from tests.test_gguf import byte_level_metadata

IDS = [5, 17, 42, 99, 7, 260, 3, 11, 300, 64]
VOCAB = 320
GLOBAL = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
BLOCK = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.qkv_proj": "attn_qkv",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.gate_up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
GEMMA_NORMS = {
    "post_attention_layernorm": "post_attention_norm",
    "pre_feedforward_layernorm": "ffn_norm",
    "post_feedforward_layernorm": "post_ffw_norm",
}
BASE = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "max_position_embeddings": 256,
    "vocab_size": VOCAB,
}
# (GGUF architecture, HF config)
CASES = {
    "llama": ("llama", {"model_type": "llama", "tie_word_embeddings": False}),
    "qwen2": ("qwen2", {"model_type": "qwen2", "tie_word_embeddings": True}),
    "qwen3": ("qwen3", {"model_type": "qwen3", "head_dim": 32, "tie_word_embeddings": True}),
    "gemma2": (
        "gemma2",
        {
            "model_type": "gemma2",
            "head_dim": 32,
            "query_pre_attn_scalar": 32,
            "attn_logit_softcapping": 50.0,
            "final_logit_softcapping": 30.0,
        },
    ),
    "gemma3": (
        "gemma3",
        {
            "model_type": "gemma3_text",
            "num_hidden_layers": 6,  # five sliding-window layers, then a global one
            "head_dim": 32,
            "query_pre_attn_scalar": 32,
            "rope_theta": 1e6,
            "rope_local_base_freq": 10000.0,
            "sliding_window": 512,
            "sliding_window_pattern": 6,
        },
    ),
    "phi3": ("phi3", {"model_type": "phi3", "partial_rotary_factor": 0.5}),
    "mistral3": (
        "mistral3",
        {
            "model_type": "ministral3",
            "tie_word_embeddings": False,
            "rope_parameters": {  # a period of 4 so the attention temperature varies over IDS
                "rope_type": "default",
                "rope_theta": 10000.0,
                "llama_4_scaling_beta": 0.5,
                "original_max_position_embeddings": 4,
            },
        },
    ),
}


def random_hf_weights(config: dict[str, Any], seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights under the names mlx-lm's model (= the HF checkpoint) uses."""
    model_class, args_class = model_classes(config, source="test")
    model = model_class(args_class.from_dict(config))
    rng = np.random.default_rng(seed)
    gemma = config["model_type"].startswith("gemma")
    out = {}
    for name, p in tree_flatten(model.parameters()):
        w = rng.standard_normal(p.shape).astype(np.float32) * 0.2
        out[name] = w + (0 if gemma else 1) if name.endswith("norm.weight") else w
    if config.get("tie_word_embeddings", False) or gemma:
        out.pop("lm_head.weight", None)
    return out


def gguf_name(name: str, arch: str) -> str:
    stem, suffix = name.rsplit(".", 1)
    block = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", stem)
    if not block:
        return f"{GLOBAL[stem]}.{suffix}"
    table = {**BLOCK, **GEMMA_NORMS} if arch.startswith("gemma") else BLOCK
    return f"blk.{block[1]}.{table[block[2]]}.{suffix}"


def add_metadata(
    writer: gguf.GGUFWriter, arch: str, config: dict[str, Any], *, chat_template: bool = True
) -> None:
    head_dim = config.get("head_dim", config["hidden_size"] // config["num_attention_heads"])
    u32 = {
        "embedding_length": config["hidden_size"],
        "block_count": config["num_hidden_layers"],
        "feed_forward_length": config["intermediate_size"],
        "attention.head_count": config["num_attention_heads"],
        "attention.head_count_kv": config["num_key_value_heads"],
        "context_length": config["max_position_embeddings"],
        "attention.key_length": head_dim,
        "attention.value_length": head_dim,
        "rope.dimension_count": int(head_dim * config.get("partial_rotary_factor", 1.0)),
    }
    f32 = {
        "attention.layer_norm_rms_epsilon": config["rms_norm_eps"],
        "rope.freq_base": config["rope_theta"],
    }
    if arch.startswith("gemma"):
        u32["attention.sliding_window"] = config.get("sliding_window", 4096)
        f32["attn_logit_softcapping"] = config.get("attn_logit_softcapping", 50.0)
        f32["final_logit_softcapping"] = config.get("final_logit_softcapping", 30.0)
    if arch == "gemma3":
        f32["rope.freq_base_swa"] = config["rope_local_base_freq"]
    if arch == "mistral3":
        f32["attention.temperature_scale"] = config["rope_parameters"]["llama_4_scaling_beta"]
        u32["rope.scaling.original_context_length"] = 4
    for key, value in u32.items():
        writer.add_uint32(f"{arch}.{key}", value)
    for key, value in f32.items():
        writer.add_float32(f"{arch}.{key}", value)
    for key, value in byte_level_metadata().items():
        if key == "tokenizer.chat_template" and not chat_template:
            continue
        if isinstance(value, list):
            writer.add_array(key, value)
        elif isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        else:
            writer.add_string(key, value)


def write_gguf_model(path, arch, config, weights, quantized=None, extra=None, chat_template=True):
    """Write ``weights`` as llama.cpp's converter would; ``quantized`` maps HF names to a
    type whose random blocks replace the weight (``weights`` gets their decoded value);
    ``extra`` tensors are written as they are."""
    writer = gguf.GGUFWriter(path, arch)
    add_metadata(writer, arch, config, chat_template=chat_template)
    for name, value in (extra or {}).items():
        writer.add_tensor(name, value)
    rng = np.random.default_rng(1)
    heads = {"attn_q": config["num_attention_heads"], "attn_k": config["num_key_value_heads"]}
    for name, w in weights.items():
        gname = gguf_name(name, arch)
        kind = (quantized or {}).get(name)
        if kind is not None:  # NeoX architectures only: rows are stored as they are.
            raw = random_blocks(kind.name, w.shape, rng)
            weights[name] = dequantize(raw, kind)
            writer.add_tensor(gname, raw, raw_dtype=kind)
            continue
        if arch in ("llama", "mistral3") and gname.split(".")[-2] in heads:
            w = permute_for_gguf(w, heads[gname.split(".")[-2]])
        if arch.startswith("gemma") and name.endswith("norm.weight"):
            w = w + 1
        writer.add_tensor(gname, np.ascontiguousarray(w))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_hf_folder(folder, config, weights):
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    save_file(weights, str(folder / "model.safetensors"))
    write_tokenizer(folder)


def logits(model) -> np.ndarray:
    out = model(mx.array([IDS]))
    mx.eval(out)
    return np.array(out[0].astype(mx.float32))


@pytest.mark.parametrize("name", sorted(CASES))
def test_gguf_and_hf_folder_give_the_same_logits(tmp_path, name):
    arch, changes = CASES[name]
    config = {**BASE, **changes}
    weights = random_hf_weights(config)
    write_gguf_model(tmp_path / "m.gguf", arch, config, dict(weights))
    write_hf_folder(tmp_path / "hf", config, weights)
    from_gguf, from_hf = load(tmp_path / "m.gguf"), load(tmp_path / "hf")
    assert from_gguf.config["model_type"] == config["model_type"]
    expected = logits(from_hf.model)
    assert np.abs(logits(from_gguf.model) - expected).max() < 1e-4 * max(1, np.abs(expected).max())


K_TYPES = [
    "Q2_K",
    "Q3_K",
    "Q4_K",
    "Q5_K",
    "Q6_K",
    "IQ4_XS",
    "IQ4_NL",
    "Q4_0",
    "Q4_1",
    "Q5_0",
    "Q5_1",
    "Q8_0",
]


@pytest.mark.parametrize("kind", K_TYPES)
def test_quantized_model_matches_its_decoded_weights(tmp_path, kind):
    # Rows of 256 for the K-quants; every linear layer and the embedding in `kind`.
    config = {**BASE, **CASES["qwen3"][1], "hidden_size": 256, "intermediate_size": 256}
    config["head_dim"] = 64
    weights = random_hf_weights(config)
    quantized = {n: T[kind] for n, w in weights.items() if w.ndim == 2}
    write_gguf_model(tmp_path / "m.gguf", "qwen3", config, weights, quantized)
    write_hf_folder(tmp_path / "hf", config, weights)  # the decoded weights, float32
    from_gguf = load(tmp_path / "m.gguf")
    layer = from_gguf.config["quantization"]["model.layers.0.mlp.down_proj"]
    group_size = {"Q2_K": 16, "Q6_K": 16, "Q3_K": 128}.get(kind, 32)
    assert layer["group_size"] == group_size
    expected = logits(load(tmp_path / "hf").model)
    assert np.abs(logits(from_gguf.model) - expected).max() < 1e-4 * max(1, np.abs(expected).max())
    dense = load(tmp_path / "m.gguf", dequantize=True)
    assert "quantization" not in dense.config
    assert np.abs(logits(dense.model) - expected).max() < 1e-4 * max(1, np.abs(expected).max())


@pytest.mark.parametrize("kind", ["Q6_K", "Q4_K", "IQ4_XS"])
def test_converted_folder_gives_the_same_logits(tmp_path, kind):
    config = {**BASE, **CASES["qwen3"][1], "hidden_size": 256, "intermediate_size": 256}
    config["head_dim"] = 64
    weights = random_hf_weights(config)
    quantized = {n: T[kind] for n, w in weights.items() if w.ndim == 2}
    write_gguf_model(tmp_path / "m.gguf", "qwen3", config, weights, quantized)
    expected = logits(load(tmp_path / "m.gguf").model)
    convert(tmp_path / "m.gguf", tmp_path / "as_stored")
    converted = load(tmp_path / "as_stored")
    assert converted.config["quantization"] == load(tmp_path / "m.gguf").config["quantization"]
    np.testing.assert_array_equal(logits(converted.model), expected)
    convert(tmp_path / "m.gguf", tmp_path / "f32", dtype="float32")
    dense = load(tmp_path / "f32")
    assert "quantization" not in dense.config
    assert np.abs(logits(dense.model) - expected).max() < 1e-4 * max(1, np.abs(expected).max())


def test_llama3_rope_freqs_tensor_becomes_rope_scaling(tmp_path):
    # Llama 3.1+: llama.cpp stores the scaled RoPE as per-frequency divisors.
    scaling = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    config = {**BASE, "model_type": "llama", "rope_theta": 500000.0, "rope_scaling": scaling}
    config["tie_word_embeddings"] = False
    weights = random_hf_weights(config)
    dims = config["hidden_size"] // config["num_attention_heads"]
    # As convert_hf_to_gguf.py's LlamaModel.generate_extra_tensors, independently written.
    freqs = 1.0 / 500000.0 ** (np.arange(0, dims, 2) / dims)
    factors = []
    for wavelen in 2 * np.pi / freqs:
        if wavelen < 8192 / 4:
            factors.append(1.0)
        elif wavelen > 8192 / 1:
            factors.append(8.0)
        else:
            smooth = (8192 / wavelen - 1) / (4 - 1)
            factors.append(1 / ((1 - smooth) / 8 + smooth))
    assert 1.0 in factors and 8.0 in factors and len(set(factors)) > 2
    extra = {"rope_freqs.weight": np.array(factors, np.float32)}
    write_gguf_model(tmp_path / "m.gguf", "llama", config, dict(weights), extra=extra)
    write_hf_folder(tmp_path / "hf", config, weights)
    from_gguf = load(tmp_path / "m.gguf")
    assert from_gguf.config["rope_scaling"] == scaling
    positions = list(range(200))  # long enough for the scaled frequencies to matter
    ids = [IDS[i % len(IDS)] for i in positions]
    a = np.array(from_gguf.model(mx.array([ids]))[0])
    b = np.array(load(tmp_path / "hf").model(mx.array([ids]))[0])
    assert np.abs(a - b).max() < 1e-4 * max(1, np.abs(b).max())


def test_compact_precision_keeps_float32_activations(tmp_path):
    config = {**BASE, **CASES["qwen3"][1], "hidden_size": 256, "intermediate_size": 256}
    config["head_dim"] = 64
    weights = random_hf_weights(config)
    quantized = {n: T.Q4_K for n, w in weights.items() if w.ndim == 2}
    write_gguf_model(tmp_path / "m.gguf", "qwen3", config, weights, quantized)
    write_hf_folder(tmp_path / "hf", config, weights)
    compact = load(tmp_path / "m.gguf", gguf_precision="compact")
    assert compact.model.model.layers[0].mlp.down_proj.scales.dtype == mx.float16
    assert compact.model.model.embed_tokens.scales.dtype == mx.float32
    out = compact.model(mx.array([IDS]))
    assert out.dtype == mx.float32
    expected = logits(load(tmp_path / "hf").model)
    error = np.abs(np.array(out[0]) - expected).max() / np.abs(expected).max()
    assert 0 < error < 1e-2


def test_gemma_without_a_chat_template_gets_gemmas_turn_format(tmp_path):
    arch, changes = CASES["gemma3"]
    config = {**BASE, **changes}
    weights = random_hf_weights(config)
    write_gguf_model(tmp_path / "m.gguf", arch, config, weights, chat_template=False)
    tokenizer = load(tmp_path / "m.gguf").tokenizer
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi "},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye"},
    ]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == (
        tokenizer.bos_token + "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello.<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n"
        "<start_of_turn>model\n"
    )


def test_cli_precision_and_dequantize_flags(tmp_path, capsys):
    config = {**BASE, **CASES["qwen3"][1], "hidden_size": 256, "intermediate_size": 256}
    config["head_dim"] = 64
    weights = random_hf_weights(config)
    quantized = {n: T.Q6_K for n, w in weights.items() if w.ndim == 2}
    write_gguf_model(tmp_path / "m.gguf", "qwen3", config, weights, quantized)
    base = [
        "--model",
        str(tmp_path / "m.gguf"),
        "--prompt",
        "hi",
        "--max-tokens",
        "3",
        "--temp",
        "0",
    ]
    outputs = []
    for flags in ([], ["--dequantize"], ["--gguf-precision", "compact"]):
        assert cli_main([*base, *flags, "--json"]) == 0, capsys.readouterr().err
        outputs.append(json.loads(capsys.readouterr().out)["token_ids"])
    assert outputs[0] == outputs[1]  # the same weights, dense
    assert cli_main([*base, "--gguf-precision", "tiny"]) == 2
    assert "--gguf-precision: invalid choice: 'tiny'" in capsys.readouterr().err
