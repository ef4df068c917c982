"""Speculative decoding: decode tokens/s with and without a drafter, side by side, in one run.

    python benchmarks/bench_speculative.py --out benchmarks/results/speculative.json

Cases (every control on: logit bias on 100 ids, suppress tokens, begin suppression,
min_new_tokens, a mild repetition penalty, presence penalty, bad words, a stop string,
top-5 logprobs raw and processed; greedy):

* SmolLM2-135M (the embedded Q4_1 GGUF, and the same weights dequantized to float32:
  ``smollm2-f32``), prompt lookup, (a) "rewrite this paragraph with one change" and (b)
  free story generation;
* the random 110M Llama (benchmarks/presets.py), prompt lookup on the same two prompts
  (random weights: the text means nothing, the cost of drafting does);
* the random 110M Llama drafted by the random 15M Llama (same vocabulary; mechanics
  and the back-off: its drafts are almost never accepted);
* SmolLM2 (c) the rewrite answered as JSON under a JSON-schema constraint (speculation
  under a constraint), and every SmolLM2 prompt once more with ``measure_cost=False``
  (drafting whenever prompt lookup finds a match: the verifier's raw speed, without the
  cost model that stops drafting where it cannot pay).

``scaling`` times one forward pass over k = 1..11 new tokens, which decides whether
verifying k drafts can pay at all.

Each repeat runs the plain and the speculative call in alternating order on the same
loaded model; both produce the same tokens (checked), and the tokens go through the
same text layer (detokenizer, stop strings) as ``stream_generate``. Reported: median
decode tokens/s (tokens after the first / their time), the ratio, acceptance.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_generate import environment  # noqa: E402
from mlx_lm.utils import dequantize_model  # noqa: E402
from presets import write_preset  # noqa: E402

import mlx_gen as mg  # noqa: E402
from mlx_gen.prompts import encode_prompt  # noqa: E402
from mlx_gen.stream import TextAssembler  # noqa: E402

PARAGRAPH = (
    "The old lighthouse stood at the edge of the cliff for more than a hundred years. Every "
    "night its keeper climbed the narrow stairs, lit the great lamp, and watched the ships "
    "pass safely through the dark water. The villagers said that the light had never once "
    "failed, not even during the worst storms of winter, when the waves rose higher than the "
    "rocks and the wind howled through the empty streets."
)
REWRITE = (
    "Rewrite the following paragraph exactly, changing only the word 'lighthouse' to "
    f"'tower'. Do not change anything else.\n\n{PARAGRAPH}"
)
STORY = "Write a long story about a girl who finds a dragon egg in the forest."
REWRITE_JSON = (
    'Answer with a JSON object {"text": ...} whose text is the following paragraph, '
    f"exactly, with only the word 'lighthouse' changed to 'tower'.\n\n{PARAGRAPH}"
)
TEXT_SCHEMA = {
    "type": "object",
    "properties": {"text": {"type": "string"}},
    "required": ["text"],
    "additionalProperties": False,
}


def controls(vocab: int) -> dict:
    """Every control on, mild enough to leave the text readable."""
    return dict(
        logit_bias={i: 0.1 for i in range(vocab - 200, vocab - 100)},
        suppress_tokens=[vocab - 1],
        begin_suppress_tokens=[vocab - 2],
        min_new_tokens=8,
        repetition_penalty=1.02,
        presence_penalty=0.05,
        bad_words=["zzzz"],
        stop=["THE END OF ALL"],
        logprobs=5,
        logprobs_modes=("raw", "processed"),
    )


def run_once(model, prompt_ids, settings):
    """Decode through the text layer; return (tokens, decode tokens/s, stats or None)."""
    stats = mg.SpeculationStats()
    tokens = mg.speculative_generate_tokens(model, prompt_ids, settings, stats=stats)
    text = TextAssembler(model.tokenizer, settings, prompt_ids, time.perf_counter())
    out, first = [], None
    for token in tokens:
        first = first or time.perf_counter()
        out.append(token.token)
        if text.feed(token).finish_reason is not None:
            tokens.close()
            break
    end = time.perf_counter()
    tps = (len(out) - 1) / (end - first) if len(out) > 1 else 0.0
    return out, tps, stats if settings.speculative is not None else None


def bench_case(name, model, prompt_ids, settings, speculative, repeats):
    """Alternate plain and speculative runs; return the case's summary."""
    spec_settings = replace(settings, speculative=speculative)
    run_once(model, prompt_ids, replace(settings, max_tokens=4))  # warm up both paths
    run_once(model, prompt_ids, replace(spec_settings, max_tokens=4))
    plain, spec, rates, drafted, decisions = [], [], [], [], []
    for r in range(repeats):
        order = [(settings, plain), (spec_settings, spec)]
        for s, sink in order if r % 2 == 0 else order[::-1]:
            out, tps, stats = run_once(model, prompt_ids, s)
            sink.append((out, tps))
            if stats is not None:
                rates.append(stats.acceptance_rate)
                drafted.append(stats.drafted)
                decisions.append(stats.decision)
    same = all(o == plain[0][0] for o, _ in plain + spec)
    n_tokens = len(plain[0][0])
    p, s = statistics.median(t for _, t in plain), statistics.median(t for _, t in spec)
    row = {
        "case": name,
        "tokens": n_tokens,
        "plain_tps": p,
        "spec_tps": s,
        "ratio": s / p,
        "acceptance": statistics.median(rates),
        "drafted_per_run": statistics.median(drafted),
        "identical_output": same,
        "decision": decisions[-1],
        "plain_all": [t for _, t in plain],
        "spec_all": [t for _, t in spec],
    }
    print(
        f"{name:38s} {n_tokens:4d} tok  plain {p:6.1f}  spec {s:6.1f} tok/s  "
        f"{s / p:5.2f}x  accepted {row['acceptance']:.0%} of {row['drafted_per_run']:.0f}  "
        f"identical={same}  [{row['decision']}]",
        flush=True,
    )
    return row


def forward_scaling(name: str, model, sizes=(1, 2, 4, 8, 11), repeats: int = 5) -> dict:
    """Milliseconds of one forward pass over k new tokens (min over repeats), 100 cached."""
    import mlx.core as mx
    from mlx_lm.models.cache import trim_prompt_cache

    cache = mg.PromptCache(model.model)
    model.model(mx.array([list(range(10, 110))]), cache=cache.layers)
    mx.eval([c.state for c in cache.layers])
    row = {"case": f"forward {name}"}
    for k in sizes:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            mx.eval(model.model(mx.array([list(range(200, 200 + k))]), cache=cache.layers))
            times.append(time.perf_counter() - start)
            trim_prompt_cache(cache.layers, k)
        row[f"{k}_tokens_ms"] = 1000 * min(times)
    print(f"forward {name:14s} " + "  ".join(f"{k}: {row[f'{k}_tokens_ms']:.0f} ms" for k in sizes))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gen", type=int, default=160, help="max tokens per run")
    parser.add_argument("--cases", default="smollm2,smollm2-f32,110M,draft", help="comma-separated")
    parser.add_argument("--root", default=str(HERE / ".models"))
    parser.add_argument("--out", help="write the results as JSON (after every case)")
    args = parser.parse_args()
    cases, rows = args.cases.split(","), []
    lookup = mg.PromptLookup(num_draft=10, max_ngram=3, min_ngram=2)
    always = replace(lookup, measure_cost=False)

    def add(name, model, ids, base, drafter):
        rows.append(bench_case(name, model, ids, base, drafter, args.repeats))
        save(args.out, args.repeats, rows)

    if "scaling" in cases:
        smol = mg.load(None)
        rows.append(forward_scaling("SmolLM2 4-bit", smol))
        dequantize_model(smol.model)
        rows.append(forward_scaling("SmolLM2 f32", smol))
        rows.append(forward_scaling("110M f32", mg.load(write_preset("110M", Path(args.root)))))
        save(args.out, args.repeats, rows)
    for case in [c for c in cases if c.startswith("smollm2")]:
        model = mg.load(None)
        if case == "smollm2-f32":  # MLX's CPU quantized matmul costs ~k x for k tokens
            dequantize_model(model.model)
        base = mg.GenerationSettings(max_tokens=args.gen, **controls(model.vocab_size))
        prompts = (("(a) rewrite", REWRITE, None), ("(b) story", STORY, None),
                   ("(c) json", REWRITE_JSON, mg.JsonSchema(TEXT_SCHEMA)))  # fmt: skip
        for label, text, constraint in prompts:
            messages = [{"role": "user", "content": text}]
            ids = encode_prompt(model.tokenizer, None, messages=messages)
            settings = replace(base, constraint=constraint)
            add(f"{case} lookup {label}", model, ids, settings, lookup)
            add(f"{case} lookup always {label}", model, ids, settings, always)
    if "110M" in cases or "draft" in cases:
        model = mg.load(write_preset("110M", Path(args.root)))
        base = mg.GenerationSettings(max_tokens=args.gen, ignore_eos=True, **controls(32000))
        smol = mg.load(None).tokenizer  # real text, re-encoded into the preset's id range
        for label, text in (("(a) rewrite", REWRITE), ("(b) story", STORY)):
            ids = [1] + [3 + i % 31000 for i in smol.encode(text)]
            if "110M" in cases:
                add(f"110M lookup {label}", model, ids, base, lookup)
        if "draft" in cases:
            draft = mg.DraftModel(mg.load(write_preset("15M", Path(args.root))), num_draft=4)
            add("110M draft=15M (b) story", model, ids, base, draft)


def save(out: str | None, repeats: int, rows: list[dict]) -> None:
    """Write what was measured so far (a long run keeps its finished cases)."""
    if out:
        doc = {"environment": environment(), "repeats": repeats, "rows": rows}
        Path(out).write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
