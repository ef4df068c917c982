"""An independent numpy forward pass for Llama-family checkpoints (HF semantics).

Rotate-half RoPE (HF order), grouped-query attention, RMSNorm, SwiGLU, optional
q/k/v biases (Qwen2) and Llama 3.1 ``rope_scaling``. Used to check loaded models.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def _inv_freq(config: dict[str, Any], head_dim: int) -> np.ndarray:
    base = config.get("rope_theta", 10000.0)
    inv = 1.0 / base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    scaling = config.get("rope_scaling")
    if scaling and scaling.get("rope_type", scaling.get("type")) == "llama3":
        factor, low, high = (
            scaling["factor"],
            scaling["low_freq_factor"],
            scaling["high_freq_factor"],
        )
        old = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        smooth = (old / wavelen - low) / (high - low)
        scaled = np.where(wavelen > old / low, inv / factor, inv)
        medium = (wavelen <= old / low) & (wavelen >= old / high)
        inv = np.where(medium, (1 - smooth) * inv / factor + smooth * inv, scaled)
    return inv


def _rope(x: np.ndarray, inv: np.ndarray) -> np.ndarray:
    # x: (heads, T, head_dim)
    t = np.arange(x.shape[1])[:, None] * inv[None, :]
    cos, sin = np.cos(np.concatenate([t, t], -1)), np.sin(np.concatenate([t, t], -1))
    half = x.shape[-1] // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], -1)
    return x * cos + rotated * sin


def _rms(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def forward(weights: dict[str, np.ndarray], config: dict[str, Any], ids: list[int]) -> np.ndarray:
    """Logits, shape ``(T, vocab)``, for token ``ids`` (float64 math)."""
    W = {k: v.astype(np.float64) for k, v in weights.items()}
    nh, nkv = config["num_attention_heads"], config["num_key_value_heads"]
    hd = config.get("head_dim") or config["hidden_size"] // nh
    eps, T = config["rms_norm_eps"], len(ids)
    inv = _inv_freq(config, hd)
    x = W["model.embed_tokens.weight"][ids]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = _rms(x, W[p + "input_layernorm.weight"], eps)

        def proj(name: str, n_heads: int, h: np.ndarray = h, p: str = p) -> np.ndarray:
            y = h @ W[p + f"self_attn.{name}.weight"].T + W.get(p + f"self_attn.{name}.bias", 0)
            return y.reshape(T, n_heads, hd).transpose(1, 0, 2)  # (heads, T, hd)

        q, k, v = (
            _rope(proj("q_proj", nh), inv),
            _rope(proj("k_proj", nkv), inv),
            proj("v_proj", nkv),
        )
        k, v = np.repeat(k, nh // nkv, 0), np.repeat(v, nh // nkv, 0)
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(hd) + mask
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        attn = (probs @ v).transpose(1, 0, 2).reshape(T, nh * hd)
        x = x + attn @ W[p + "self_attn.o_proj.weight"].T
        h = _rms(x, W[p + "post_attention_layernorm.weight"], eps)
        gate, up = h @ W[p + "mlp.gate_proj.weight"].T, h @ W[p + "mlp.up_proj.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ W[p + "mlp.down_proj.weight"].T
    x = _rms(x, W["model.norm.weight"], eps)
    head = W.get("lm_head.weight", W["model.embed_tokens.weight"])
    return x @ head.T
