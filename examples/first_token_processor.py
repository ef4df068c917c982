"""A custom processor that acts on the first generated token only, via ``ctx.step``.

A logits processor is ``processor(logits, ctx) -> logits``. ``ctx.step`` is the index
of the token about to be generated (0 = the first), and ``ctx.prompt_ids`` is the whole
prompt, including any part served from a prompt cache. So "do this at the first answer
token" is ``if ctx.step == 0``, with no prompt length to capture or guess.

Pitfalls this demonstrates: transformers' processors get ``input_ids`` with no prompt
length, so custom ones capture it at construction or keep a global (the widely copied
Llama-2 recipe's ``current_token_len``), which breaks as soon as the prompt changes;
mlx-lm passes prompt + generated tokens concatenated but misses tokens already in the
prompt cache (mlx-lm#1773, mlx-engine PR #319) and calls processors one step ahead.
Here the same processor object is reused across calls and a shared prompt cache.

The question is asked in a multi-turn chat, and its natural answer starts with a
digit ("7 times 6 equals 42."). Forbidding digits at step 0 changes the first word;
digits later in the answer stay allowed. The built-in ``begin_suppress_tokens`` does the
same thing and is checked against it.

Run: ``python examples/first_token_processor.py`` (embedded SmolLM2, about 20 s on a CPU).
"""

from __future__ import annotations

import mlx.core as mx

import mlx_gen as mg

MESSAGES = [
    {"role": "user", "content": "Hi!"},
    {"role": "assistant", "content": "Hello! How can I help you today?"},
    {"role": "user", "content": "What is 7 times 6? Reply with only the number."},
]


class NoDigitFirst:
    """Ban every token whose text starts with a digit, at the first generated position.

    >>> # settings = mg.GenerationSettings(logits_processors=[NoDigitFirst(model)])
    """

    def __init__(self, model: mg.LoadedModel) -> None:
        decode = model.tokenizer.decode
        self.ids = [i for i in range(model.vocab_size) if decode([i]).lstrip()[:1].isdigit()]
        mask = mx.zeros((model.vocab_size,), dtype=mx.int32).at[mx.array(self.ids)].add(1) > 0
        self.mask = mask  # (V,) True at the banned ids, built once
        self.seen: list[tuple[int, int]] = []  # (step, prompt length) per call, for display

    def __call__(self, logits: mx.array, ctx: mg.ProcessorContext) -> mx.array:
        self.seen.append((ctx.step, ctx.prompt_length))
        if ctx.step != 0:  # a Python int: branching on it keeps the step lazy
            return logits
        return mx.where(self.mask, -mx.inf, logits)  # a new array; the input is unchanged


def main() -> None:
    model = mg.load()
    cache = mg.PromptCache(model.model)
    no_digit = NoDigitFirst(model)
    print(f"{len(no_digit.ids)} vocabulary entries start with a digit\n")
    runs = [
        ("plain", mg.GenerationSettings(max_tokens=12)),
        ("NoDigitFirst", mg.GenerationSettings(max_tokens=12, logits_processors=[no_digit])),
        (
            "begin_suppress_tokens",
            mg.GenerationSettings(max_tokens=12, begin_suppress_tokens=no_digit.ids),
        ),
    ]
    texts = []
    for name, settings in runs:
        result = mg.generate(model, messages=MESSAGES, settings=settings, prompt_cache=cache)
        texts.append(result.text)
        print(f"{name:>22}: {result.text!r}")
    step, prompt_length = no_digit.seen[0]
    print(
        f"\nthe processor's first call: ctx.step={step}, ctx.prompt_length={prompt_length} "
        f"(the prompt was served from the cache, and still counted in full)"
    )
    print(f"steps it saw: {[s for s, _ in no_digit.seen]}")
    print(f"custom processor == begin_suppress_tokens: {texts[1] == texts[2]}")


if __name__ == "__main__":
    main()
