"""Per-token cost of a JSON-schema constraint, side by side with unconstrained decode.

    python benchmarks/bench_structured.py --out benchmarks/results/structured.json
    python benchmarks/bench_structured.py --quick --models 110M   # smoke test

Models: the 110M random preset (benchmarks/presets.py weights) given a 32,000-token
byte-level BPE tokenizer (SmolLM2's first 32,000 tokens and the merges among them, so
JSON is expressible and the mask is computed over a real vocabulary), and the embedded
SmolLM2-135M (4-bit GGUF, 49,152 tokens). Both are loaded once; the two modes alternate
on every repeat (unconstrained, constrained, constrained, unconstrained, ...), on the same prompt,
with the same seed, each generating exactly ``--gen`` tokens: EOS is ignored without
the constraint, and with it the schema cannot be complete (so no EOS is allowed) before
``--gen`` tokens. Decode tokens/s is from the result's stats (first token excluded); on
a contended host, wall time is mostly other processes' load, so the process CPU time
per token (every thread of this process, prefill included) is reported too.

Also reported: schema compile time (constructor + compile for the model's tokenizer, the
token table already built, fresh grammar cache) for the test schemas, the one-off token
table build per tokenizer, and the host time of the matcher alone (consume + mask) per
token, replayed on the generated tokens.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_generate import environment  # noqa: E402
from presets import write_preset  # noqa: E402

import mlx_gen as mg  # noqa: E402
from mlx_gen.constraints import Matcher, compile_constraint  # noqa: E402
from mlx_gen.constraints.compiled import GrammarCache, build_token_table  # noqa: E402
from tests.test_structured import LISTS, PERSON, SMALL  # noqa: E402

OPEN = {  # cannot complete within --gen tokens (20 objects of >= 30-character names)
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 30, "maxLength": 60},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 16}},
        },
        "required": ["name", "tags"],
        "additionalProperties": False,
    },
    "minItems": 20,
}


def bpe_110m(root: Path) -> Path:
    """The 110M preset with a 32,000-token byte-level BPE tokenizer cut from SmolLM2's."""
    folder = root / "llama-110M-bpe"
    if (folder / "tokenizer.json").exists():
        return folder
    preset = write_preset("110M", root)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("model.safetensors", "config.json"):
        target = folder / name
        if not target.exists():
            target.symlink_to(preset / name)
    smol = mg.load().tokenizer._tokenizer
    doc = json.loads(smol.backend_tokenizer.to_str())
    vocab = {t: i for t, i in doc["model"]["vocab"].items() if i < 32000}
    merges = [
        m
        for m in doc["model"]["merges"]
        if all(p in vocab for p in (m.split(" ") if isinstance(m, str) else m))
        and "".join(m.split(" ") if isinstance(m, str) else m) in vocab
    ]
    doc["model"]["vocab"], doc["model"]["merges"] = vocab, merges
    doc["added_tokens"] = [t for t in doc["added_tokens"] if t["id"] < 32000]
    (folder / "tokenizer.json").write_text(json.dumps(doc))
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>"})
    )
    return folder


def decode_tps(model, constraint, gen: int, seed: int) -> tuple[float, float, list[int]]:
    """Decode tokens/s, process CPU ms per generated token (all threads), and the tokens."""
    settings = mg.GenerationSettings(
        max_tokens=gen,
        temperature=1.0,
        seed=seed,
        constraint=constraint,
        ignore_eos=constraint is None,
    )
    cpu = time.process_time()
    result = mg.generate(model, "The inventory as JSON:", settings=settings)
    cpu_ms = (time.process_time() - cpu) * 1000 / gen
    assert len(result.token_ids) == gen, (result.finish_reason, result.finish_message)
    return result.stats.decode_tps, cpu_ms, result.token_ids


def matcher_ms(model, constraint, tokens: list[int]) -> float:
    """Host time of consume + mask per token, replayed on ``tokens``."""
    eos = model.generation_config.eos_token_ids
    compiled = compile_constraint(
        constraint, model.tokenizer, vocab_size=model.vocab_size, eos_token_ids=eos
    )
    matcher = Matcher(compiled)
    start = time.perf_counter()
    matcher.mask()
    for token in tokens[:-1]:
        matcher.consume(token)
        matcher.mask()
    return (time.perf_counter() - start) * 1000 / len(tokens)


def compile_ms(model) -> dict[str, float]:
    """Constructor + compile per test schema (token table built beforehand, fresh cache)."""
    eos = model.generation_config.eos_token_ids
    cache = GrammarCache()
    cache.table(model.tokenizer, model.vocab_size, tuple(eos))
    out = {}
    for name, schema in [("person", PERSON), ("lists", LISTS), ("small", SMALL), ("open", OPEN)]:
        start = time.perf_counter()
        constraint = mg.JsonSchema(schema)
        compile_constraint(
            constraint, model.tokenizer, vocab_size=model.vocab_size, eos_token_ids=eos,
            cache=cache,
        )  # fmt: skip
        out[name] = (time.perf_counter() - start) * 1000
    return out


def bench(name: str, model, gen: int, repeats: int) -> dict:
    eos = model.generation_config.eos_token_ids
    start = time.perf_counter()
    build_token_table(model.tokenizer, vocab_size=model.vocab_size, eos_token_ids=eos)
    table_s = time.perf_counter() - start
    constraint = mg.JsonSchema(OPEN)
    decode_tps(model, constraint, 4, 0)  # warm up both paths and the grammar cache
    decode_tps(model, None, 4, 0)
    runs: dict[str, list[float]] = {"plain": [], "json_schema": []}
    cpu: dict[str, list[float]] = {"plain": [], "json_schema": []}
    tokens: list[int] = []
    for r in range(repeats):
        for mode in ("plain", "json_schema") if r % 2 == 0 else ("json_schema", "plain"):
            tps, ms, ids = decode_tps(model, constraint if mode == "json_schema" else None, gen, r)
            runs[mode].append(tps)
            cpu[mode].append(ms)
            tokens = ids if mode == "json_schema" else tokens
    plain, guided = statistics.median(runs["plain"]), statistics.median(runs["json_schema"])
    cpu_plain, cpu_guided = statistics.median(cpu["plain"]), statistics.median(cpu["json_schema"])
    return {
        "model": name,
        "vocab_size": model.vocab_size,
        "runs_tps": runs,
        "plain_tps": plain,
        "json_schema_tps": guided,
        "overhead_pct": (plain / guided - 1) * 100,
        "per_token_ms": {"plain": 1000 / plain, "json_schema": 1000 / guided},
        "cpu_ms_per_token": cpu,
        "cpu_overhead_pct": (cpu_guided / cpu_plain - 1) * 100,
        "matcher_host_ms_per_token": matcher_ms(model, constraint, tokens),
        "token_table_s": table_s,
        "schema_compile_ms": compile_ms(model),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="110M,smollm2")
    parser.add_argument("--gen", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--root", default="/tmp/mlx_gen_bench")
    parser.add_argument("--quick", action="store_true", help="--gen 8 --repeats 2")
    parser.add_argument("--out")
    args = parser.parse_args()
    gen, repeats = (8, 2) if args.quick else (args.gen, args.repeats)
    rows = []
    for name in args.models.split(","):
        model = mg.load(bpe_110m(Path(args.root))) if name == "110M" else mg.load()
        rows.append(bench(name, model, gen, repeats))
        row = rows[-1]
        compiled = ", ".join(f"{k} {v:.1f}" for k, v in row["schema_compile_ms"].items())
        print(
            f"{name}: plain {row['plain_tps']:.2f} tok/s, json_schema "
            f"{row['json_schema_tps']:.2f} tok/s, overhead {row['overhead_pct']:+.1f}% (CPU time "
            f"{row['cpu_overhead_pct']:+.1f}%), "
            f"matcher {row['matcher_host_ms_per_token']:.3f} ms/token, "
            f"table {row['token_table_s']:.2f} s, compile ms {compiled}",
            flush=True,
        )
    doc = {"environment": environment(), "gen": gen, "repeats": repeats, "rows": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
