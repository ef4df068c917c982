"""One measurement in a fresh process; prints one JSON line.

    python benchmarks/worker.py --engine mlx_gen --model DIR --prompt-len 128 --gen 64 \
        --scenario plain

Both engines are timed the same way, from outside: load time, time to first token
(prefill + first step), prefill tokens/s (prompt / time to first token), decode
tokens/s (tokens after the first / their time), and MLX's peak memory.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mlx.core as mx  # noqa: E402

SCENARIOS = ("plain", "controls", "sampling")


def _prompt(n: int, vocab: int) -> list[int]:
    rng = __import__("random").Random(n)
    return [rng.randrange(3, min(vocab, 30000)) for _ in range(n)]


def controls(vocab: int) -> dict:
    """The "all controls" scenario: ids fitted into the vocabulary (the same on 32k ones)."""
    return dict(
        logit_bias={(1000 + i) % vocab: 0.5 for i in range(100)},
        suppress_tokens=[5, 6, 7],
        begin_suppress_tokens=[8, 9],
        repetition_penalty=1.1,
        logprobs=5,
        logprobs_modes=("raw", "processed"),
    )


def _mlx_gen(model_arg: str, scenario: str, prompt: list[int], gen: int):
    import mlx_gen as mg

    t = time.perf_counter()
    model = mg.load(None if model_arg == "default" else model_arg)
    load_s = time.perf_counter() - t
    vocab = model.vocab_size
    extra: dict = {}
    if scenario == "controls":
        extra = controls(vocab)
    elif scenario == "sampling":
        extra = dict(temperature=0.8, top_p=0.9, top_k=50, seed=0)
    settings = mg.GenerationSettings(max_tokens=gen, ignore_eos=True, **extra)
    warm = mg.GenerationSettings(max_tokens=4, ignore_eos=True, **extra)

    def run():
        return (c.token for c in mg.stream_generate(model, prompt, settings=settings))

    mg.generate(model, prompt[:8], settings=warm)
    return load_s, run, vocab


def _mlx_lm(model_arg: str, scenario: str, prompt: list[int], gen: int):
    import mlx_lm
    from mlx_lm.sample_utils import make_logits_processors, make_sampler

    t = time.perf_counter()
    model, tokenizer = mlx_lm.load(model_arg)
    load_s = time.perf_counter() - t
    sampler, processors = None, None
    if scenario == "controls":  # what mlx-lm offers of the same controls
        vocab = model.args.vocab_size
        processors = make_logits_processors(
            logit_bias={(1000 + i) % vocab: 0.5 for i in range(100)}, repetition_penalty=1.1
        )
    elif scenario == "sampling":
        sampler = make_sampler(temp=0.8, top_p=0.9, top_k=50)

    def run(n=gen, p=prompt):
        return (
            r.token
            for r in mlx_lm.stream_generate(
                model, tokenizer, p, max_tokens=n, sampler=sampler, logits_processors=processors
            )
        )

    for _ in run(4, prompt[:8]):
        pass
    return load_s, run, model.args.vocab_size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", choices=("mlx_gen", "mlx_lm"), required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--gen", type=int, default=64)
    parser.add_argument("--scenario", choices=SCENARIOS, default="plain")
    parser.add_argument("--vocab", type=int, default=32000, help="prompt ids stay below this")
    args = parser.parse_args()
    prompt = _prompt(args.prompt_len, args.vocab)
    setup = _mlx_gen if args.engine == "mlx_gen" else _mlx_lm
    load_s, run, _ = setup(args.model, args.scenario, prompt, args.gen)
    mx.reset_peak_memory()
    start = time.perf_counter()
    first = None
    n = 0
    for _ in run():
        n += 1
        first = first or time.perf_counter()
    end = time.perf_counter()
    print(
        json.dumps(
            {
                "engine": args.engine,
                "scenario": args.scenario,
                "prompt_len": args.prompt_len,
                "generated": n,
                "load_s": load_s,
                "ttft_s": first - start,
                "prefill_tps": args.prompt_len / (first - start),
                "decode_tps": (n - 1) / (end - first),
                "peak_gb": mx.get_peak_memory() / 1e9,
            }
        )
    )


if __name__ == "__main__":
    main()
