"""GGUF architectures as data: model type, tensor names, metadata keys, fix-ups.

Each :class:`Architecture` says how one ``general.architecture`` maps onto an mlx-lm
model: which ``model_type`` builds it, how ``blk.N.*`` tensors are named there, which
``<arch>.*`` metadata keys fill which ``config.json`` keys, and the few value fixes
llama.cpp's converter makes that must be undone (Gemma stores ``norm + 1``; Llama's q/k
rows are stored in interleaved RoPE order, which mlx-lm's ``rope_traditional`` reads).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# config.json key -> GGUF key under "<architecture>.": required, then optional.
REQUIRED_KEYS = {
    "hidden_size": "embedding_length",
    "num_hidden_layers": "block_count",
    "intermediate_size": "feed_forward_length",
    "num_attention_heads": "attention.head_count",
    "rms_norm_eps": "attention.layer_norm_rms_epsilon",
}
OPTIONAL_KEYS = {
    "num_key_value_heads": "attention.head_count_kv",
    "rope_theta": "rope.freq_base",
    "max_position_embeddings": "context_length",
    "head_dim": "attention.key_length",
    "vocab_size": "vocab_size",
}
GLOBAL_TENSORS = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_ATTENTION = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
}
_MLP = {"ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
LLAMA_BLOCK = {
    **_ATTENTION,
    **_MLP,
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
GEMMA_BLOCK = {
    **_ATTENTION,
    **_MLP,
    "attn_norm": "input_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
PHI3_BLOCK = {
    "attn_qkv": "self_attn.qkv_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_up": "mlp.gate_up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}


# Gemma's turn format (as llama.cpp's built-in "gemma" template and Gemma's own): a system
# message joins the first user turn; the assistant is "model"; turns end with <end_of_turn>.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{% set prefix = messages[0]['content'] + '\\n\\n' %}{% set turns = messages[1:] %}"
    "{% else %}{% set prefix = '' %}{% set turns = messages %}{% endif %}"
    "{% for m in turns %}{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' + (prefix if loop.first else '') + m['content'] | trim"
    " + '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class Architecture:
    """How one GGUF architecture becomes an mlx-lm model.

    Attributes:
        model_type: mlx-lm's ``model_type``.
        block_tensors: ``blk.N.<name>`` -> mlx-lm module path under ``model.layers.N.``.
        keys: Extra ``config.json`` key -> GGUF key under ``<arch>.``.
        defaults: ``config.json`` values when the metadata has none.
        rope_traditional: Written to the config (``None``: not written); ``True`` reads
            llama.cpp's interleaved q/k rows without undoing the permutation.
        norm_plus_one: Norm weights are stored as ``1 + w`` (Gemma); 1 is subtracted.
        always_tied: The model always ties the output to the embedding.
        partial_rotary: ``rope.dimension_count`` below the head size becomes
            ``partial_rotary_factor``; otherwise it must equal the head size.
        chat_template: Used when the file has no ``tokenizer.chat_template``.
        unpermute_qk: Undo llama.cpp's interleaved q/k row order (for models without a
            ``rope_traditional`` option): a pure row permutation of codes and scales.
    """

    model_type: str
    block_tensors: dict[str, str]
    keys: dict[str, str] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    rope_traditional: bool | None = False
    norm_plus_one: bool = False
    always_tied: bool = False
    partial_rotary: bool = False
    chat_template: str | None = None
    unpermute_qk: bool = False


ARCHITECTURES = {
    "llama": Architecture("llama", LLAMA_BLOCK, rope_traditional=True),
    "qwen2": Architecture("qwen2", LLAMA_BLOCK),
    "qwen3": Architecture("qwen3", LLAMA_BLOCK),
    "gemma2": Architecture(
        "gemma2",
        GEMMA_BLOCK,
        keys={
            "attn_logit_softcapping": "attn_logit_softcapping",
            "final_logit_softcapping": "final_logit_softcapping",
            "sliding_window": "attention.sliding_window",
        },
        defaults={"attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0},
        norm_plus_one=True,
        always_tied=True,
        chat_template=GEMMA_CHAT_TEMPLATE,
    ),
    "gemma3": Architecture(
        "gemma3_text",
        GEMMA_BLOCK,
        keys={
            "rope_local_base_freq": "rope.freq_base_swa",
            "sliding_window": "attention.sliding_window",
        },
        # llama.cpp fixes Gemma 3's pattern at 5 sliding layers, then one global.
        defaults={"rope_local_base_freq": 10000.0, "sliding_window_pattern": 6},
        rope_traditional=None,
        norm_plus_one=True,
        always_tied=True,
        chat_template=GEMMA_CHAT_TEMPLATE,
    ),
    # Ministral 3 / Devstral 2: Llama's layout and q/k permutation; mlx-lm's ministral3
    # takes RoPE settings as rope_parameters (filled by mistral3_rope_parameters).
    "mistral3": Architecture(
        "ministral3",
        LLAMA_BLOCK,
        keys={
            "llama_4_scaling_beta": "attention.temperature_scale",
            "original_max_position_embeddings": "rope.scaling.original_context_length",
        },
        rope_traditional=None,
        unpermute_qk=True,
    ),
    "phi3": Architecture(
        "phi3",
        PHI3_BLOCK,
        keys={"original_max_position_embeddings": "rope.scaling.original_context_length"},
        partial_rotary=True,
    ),
}


def supported() -> str:
    """The supported GGUF architectures, comma-separated."""
    return ", ".join(ARCHITECTURES)


def query_pre_attn_scalar(config: dict[str, Any]) -> float:
    """Gemma's query scale as llama.cpp sets it: the head size, except for the 27B models
    (62 layers), which scale by ``hidden_size / num_attention_heads``."""
    if config["num_hidden_layers"] == 62:
        return config["hidden_size"] / config["num_attention_heads"]
    return float(config["head_dim"])


def unpermute_rows(n_rows: int, n_heads: int) -> list[int]:
    """Row order that undoes llama.cpp's q/k permutation: GGUF row ``order[j]`` is the
    original row ``j`` (each head's rotate-half pairs were interleaved)."""
    half = n_rows // n_heads // 2
    # original (head, part, i) sits at GGUF (head, i, part)
    return [
        h * 2 * half + i * 2 + part for h in range(n_heads) for part in (0, 1) for i in range(half)
    ]


def mistral3_rope_parameters(config: dict[str, Any]) -> dict[str, Any]:
    """mlx-lm ministral3's ``rope_parameters`` from the flat config keys (no scaling);
    the attention temperature's period is the original context (else the context)."""
    original = config.pop("original_max_position_embeddings", None)
    return {
        "rope_type": "default",
        "rope_theta": config.pop("rope_theta", 10000.0),
        "llama_4_scaling_beta": config.pop("llama_4_scaling_beta", 0.0),
        "original_max_position_embeddings": original or config["max_position_embeddings"],
    }
