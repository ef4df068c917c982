"""Greedy decoding with each token's real probability, checked against ``score()``.

With ``GenerationSettings(logprobs=5)`` every generated token carries its log-probability,
its rank and the top-5 alternatives (sorted, the chosen token included). Under greedy
decoding the ``raw`` logprob is the model's own value for the chosen token, and
``mg.score`` (teacher forcing: the same tokens fed in one pass) must give the same
numbers, which is what this example prints side by side.

Pitfalls this demonstrates: under greedy decoding peers have reported every logprob as
0.0 (lmdeploy#2232), ``None`` (lmdeploy#1948), probability 1.0 (llama.cpp#7197), or
``logprob: 0`` with top-p (TGI#2108); mlx-lm's server returns the top entries unsorted
(from ``argpartition``) and labels the first as the chosen token.

Run: ``python examples/greedy_logprobs.py`` (embedded SmolLM2, about 15 s on a CPU).
"""

from __future__ import annotations

import math

import mlx_gen as mg

QUESTION = "What is the capital of France? Answer in one sentence."


def pct(logprob: float) -> str:
    """A logprob as a probability: a percentage, or scientific notation when tiny."""
    p = math.exp(logprob)
    return f"{p:.1%}" if p >= 1e-3 else f"{p:.0e}"


def main() -> None:
    model = mg.load()
    decode = model.tokenizer.decode
    messages = [{"role": "user", "content": QUESTION}]
    prompt_ids = model.tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True
    )
    settings = mg.GenerationSettings(max_tokens=20, temperature=0.0, logprobs=5)
    result = mg.generate(model, prompt_ids, settings=settings)
    scored = mg.score(model, prompt_ids, result.token_ids, top_n=5)
    print(f"greedy answer: {result.text!r} ({result.finish_reason})\n")
    print(f"{'token':>12} {'generate':>9} {'score':>9} {'prob':>7} rank  top-5 alternatives")
    diffs = []
    for step, scored_lp in zip(result.logprobs, scored.logprobs, strict=True):
        lp = step["raw"]
        diffs.append(abs(lp.logprob - scored_lp.logprob))
        top = "  ".join(f"{decode([i])!r} {pct(v)}" for i, v in lp.top)
        print(
            f"{decode([lp.token])!r:>12} {lp.logprob:9.4f} {scored_lp.logprob:9.4f} "
            f"{math.exp(lp.logprob):7.2%} {lp.rank:>4}  {top}"
        )
    total = sum(step["raw"].logprob for step in result.logprobs)
    print(f"\nmax |generate - score| = {max(diffs):.2e} nats over {len(diffs)} tokens")
    print(f"sequence logprob: generate {total:.4f}, score {scored.total:.4f}")


if __name__ == "__main__":
    main()
