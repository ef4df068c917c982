"""Logit bias: push the answer to another word, or ban a word outright.

``GenerationSettings(logit_bias={id: bias})`` adds ``bias`` to that token's logit at
every step; ``-inf`` bans the token and ``+inf`` forces it. The processed logprobs
(the distribution actually sampled from) show the bias at work, next to the raw ones
(the model's own distribution), so you can see that it really reached the logits.

Pitfalls this demonstrates:

* A bias that is built but never added does nothing, silently: the Zonos codebook
  bug, llama.cpp's ``-l ID-inf`` with no effect (llama.cpp#13605, #19699), vLLM
  skipping it under speculative decoding (vllm#38202). mlx-lm has no flag for it at all.
  Here the processed probability of a banned token is exactly 0.
* A bias applies to one token *id*, and the same word has several ids: after "is" the
  model writes ``" Paris"`` (with its leading space), so banning ``"Paris"`` (no space)
  changes nothing. ``bad_words=["Paris"]`` (or the CLI's ``--logit-bias-text``) covers
  both spellings.

Run: ``python examples/logit_bias.py`` (the embedded SmolLM2 model, about 20 s on a CPU).
"""

from __future__ import annotations

import math

import mlx_gen as mg

QUESTION = "What is the capital of France? Answer in one sentence."


def token_id(model: mg.LoadedModel, text: str) -> int:
    """The id of ``text``, which must be a single token."""
    ids = model.tokenizer.encode(text, add_special_tokens=False)
    assert len(ids) == 1, f"{text!r} is {len(ids)} tokens"
    return ids[0]


def pct(p: float) -> str:
    """A probability as a percentage, or in scientific notation when tiny."""
    if p == 0:
        return "exactly 0"
    return f"{p:7.2%}" if p >= 1e-4 else f"{p:7.1e}"


def show(
    model: mg.LoadedModel,
    cache: mg.PromptCache,
    title: str,
    watch: dict[str, int],
    **options: object,
) -> str:
    """Answer the question under ``options``; print the text and the watched tokens' odds."""
    settings = mg.GenerationSettings(
        max_tokens=12,
        logprobs=3,
        logprob_token_ids=tuple(watch.values()),
        logprobs_modes=("raw", "processed"),
        **options,  # type: ignore[arg-type]
    )
    messages = [{"role": "user", "content": QUESTION}]
    result = mg.generate(model, messages=messages, settings=settings, prompt_cache=cache)
    # The answer word comes right after " is"; look at that position.
    step = result.tokens.index(" is") + 1
    report = result.logprobs[step]
    print(f"{title:<34} -> {result.text!r}")
    for word, i in watch.items():
        raw, processed = (math.exp(report[m].extra[i]) for m in ("raw", "processed"))
        print(
            f"    P({word!r:>8}) at the answer position: raw {pct(raw)}, processed {pct(processed)}"
        )
    return result.text


def main() -> None:
    model = mg.load()
    cache = mg.PromptCache(model.model)  # the question is prefilled once for all runs
    watch = {" Paris": token_id(model, " Paris"), " Lyon": token_id(model, " Lyon")}
    paris_no_space = token_id(model, "Paris")
    print(
        f"token ids: ' Paris' = {watch[' Paris']}, 'Paris' = {paris_no_space}, "
        f"' Lyon' = {watch[' Lyon']}\n"
    )
    show(model, cache, "no bias", watch)
    show(model, cache, "bias ' Lyon' +11", watch, logit_bias={watch[" Lyon"]: 11.0})
    print(
        "    (a bias applies at every step: strong enough to change the answer, it also makes\n"
        "     the word repeat; for one position only, see first_token_processor.py)"
    )
    show(model, cache, "ban ' Paris' (-inf)", watch, logit_bias={watch[" Paris"]: -math.inf})
    text = show(
        model, cache, "ban 'Paris' without the space", watch, logit_bias={paris_no_space: -math.inf}
    )
    print(
        f"\nBanning the id of 'Paris' left the answer unchanged ({'Paris' in text}): the model "
        "writes ' Paris', another id."
    )


if __name__ == "__main__":
    main()
