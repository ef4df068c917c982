"""Stop strings and custom stopping criteria, and what a stream shows while they match.

``GenerationSettings(stop=[...])`` matches on the decoded *text*, so a stop string
stops generation however the model happens to tokenize it, and it is cut from the
output (``include_stop_str=True`` keeps it). While streaming, text that may be the
beginning of a stop string is held back until it is resolved, so a partial stop string
is never shown. ``stopping_criteria=[criterion]`` calls ``criterion(ctx)`` after every
token with the prompt ids, the generated ids and the text so far.

Pitfalls this demonstrates: mlx-lm's server matches stop *token ids*, so the same text
under another tokenization does not stop generation; vLLM once streamed partial stop
strings (vllm#3574); transformers keeps the stop text and its streamers do not hold
back; mlx-lm has no stopping hook at all (the caller must break the loop).

Run: ``python examples/stopping.py`` (embedded SmolLM2, about 30 s on a CPU).
"""

from __future__ import annotations

import mlx_gen as mg

MESSAGES = [{"role": "user", "content": "Describe Paris in three short sentences."}]


def word_budget(n: int):
    """A criterion: stop once the text holds ``n`` words."""

    def criterion(ctx: mg.StoppingContext) -> bool:
        return len(ctx.text.split()) >= n

    return criterion


def end_of_sentence(ctx: mg.StoppingContext) -> bool:
    """A criterion: stop after the first sentence (its period is kept, unlike a stop string)."""
    return ctx.text.rstrip().endswith((".", "!", "?"))


def run(model: mg.LoadedModel, cache: mg.PromptCache, title: str, **options: object) -> None:
    settings = mg.GenerationSettings(max_tokens=30, **options)  # type: ignore[arg-type]
    result = mg.generate(model, messages=MESSAGES, settings=settings, prompt_cache=cache)
    print(
        f"{title}:\n    {result.text!r}\n    finish={result.finish_reason}, "
        f"matched={result.matched!r}, {len(result.token_ids)} tokens"
    )


def main() -> None:
    model = mg.load()
    cache = mg.PromptCache(model.model)
    stop = "elegance, and"  # three tokens: ' elegance' ',' ' and'
    print(f"streaming with stop={[stop]!r}; each chunk as it arrives ('' = held back):")
    chunks = mg.stream_generate(
        model,
        messages=MESSAGES,
        prompt_cache=cache,
        settings=mg.GenerationSettings(max_tokens=30, stop=[stop]),
    )
    for chunk in chunks:
        token = model.tokenizer.decode([chunk.token])
        print(f"    token {token!r:<12} -> printed {chunk.text!r}")
        if chunk.finish_reason:
            print(f"    finish={chunk.finish_reason}, matched={chunk.matched!r}\n")
    run(model, cache, "stop=['.'] (the period is cut)", stop=["."])
    run(
        model,
        cache,
        "criterion: end of the first sentence (the period is kept)",
        stopping_criteria=[end_of_sentence],
    )
    run(model, cache, "criterion: a budget of 6 words", stopping_criteria=[word_budget(6)])


if __name__ == "__main__":
    main()
