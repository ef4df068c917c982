"""The full next-token distribution, raw and after top-k / top-p, as probabilities.

``mg.next_token_distribution(model, prompt, mode=...)`` returns every token's
probability at the next position: ``"raw"`` is the model's softmax; ``"processed"``
is what sampling draws from after the processors and the temperature / top-k / top-p /
min-p filters of ``settings``. Filtered tokens have probability exactly 0 and the
rest are renormalised to sum to 1 (to float32 rounding: MLX's CPU sum over a 49,152-entry
vocabulary is off by up to about 1e-4).

Pitfall this demonstrates: transformers' ``output_scores`` hands back processed
*scores* with ``-inf`` for filtered tokens, which users then read as probabilities
(the Qwen1.5 question); LMDeploy and TGI have returned 0.0, ``None`` or 1.0 under
greedy or top-p (lmdeploy#2232, #1948, TGI#2108). Here the values are probabilities,
the zeros are exact, and the sums are printed.

Run: ``python examples/next_token_distribution.py`` (embedded SmolLM2, a few seconds).
"""

from __future__ import annotations

import mlx_gen as mg

PROMPT = "The capital of France is"
BLOCKS = " ▏▎▍▌▋▊▉█"


def bar(p: float, width: int = 40) -> str:
    """``p`` in [0, 1] as a bar of unicode blocks, in eighths of a character."""
    eighths = round(p * width * 8)
    return "█" * (eighths // 8) + (BLOCKS[eighths % 8] if eighths % 8 else "")


def show(model: mg.LoadedModel, title: str, dist: mg.Distribution) -> None:
    """Print the top entries as bars, then the exact-zero count and the total mass."""
    probs = dist.probs
    kept = int((probs > 0).sum().item())
    print(f"{title}")
    for token_id, p in dist.top:
        if p > 0:
            token = repr(model.tokenizer.decode([token_id]))
            print(f"  {token:>12} {p:7.2%} {bar(p)}")
    zeros = probs.size - kept
    print(
        f"  -> {kept} tokens kept, {zeros} exactly 0; float32 sum of probabilities = "
        f"{probs.sum().item():.6f}\n"
    )


def main() -> None:
    model = mg.load()
    print(f"next token after {PROMPT!r}:\n")
    show(model, "raw (the model's softmax)", mg.next_token_distribution(model, PROMPT, top_n=8))
    for title, settings in [
        ("top_k=5", mg.GenerationSettings(temperature=1.0, top_k=5)),
        ("top_k=5, then top_p=0.9", mg.GenerationSettings(temperature=1.0, top_k=5, top_p=0.9)),
        ("temperature=2.0, top_k=5", mg.GenerationSettings(temperature=2.0, top_k=5)),
    ]:
        dist = mg.next_token_distribution(
            model, PROMPT, mode="processed", settings=settings, top_n=8
        )
        show(model, f"processed: {title}", dist)


if __name__ == "__main__":
    main()
