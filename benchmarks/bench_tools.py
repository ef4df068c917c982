"""Tool calling: the per-token cost of an armed tool grammar, and its compile time.

    python benchmarks/bench_tools.py --out benchmarks/results/tools.json
    python benchmarks/bench_tools.py --quick   # smoke test

Model: the 110M random preset with a 32,000-token byte-level BPE tokenizer cut from
SmolLM2's (as ``bench_structured.py``), a chat template in the Hermes format.

* **Per-token cost** (target <= 5% of a decode step): the host time of the grammar
  (consume + next mask, llguidance) per token of an armed call of a 10-tool set,
  replayed on a canonical call's tokens, against the process CPU time per token of an
  unconstrained decode step of the same model (``--gen`` tokens, EOS ignored). The
  engine builds step n+1's mask while the model computes it, so this is an upper bound
  on what the grammar adds.
* **Compile time** (target <= 50 ms, cached per set): tool definitions checked, the
  call grammar built and compiled for the tokenizer (token table built beforehand,
  fresh caches); then the same set again (cached).
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
from bench_structured import bpe_110m  # noqa: E402

import mlx_gen as mg  # noqa: E402
from mlx_gen.constraints import Matcher, compile_constraint  # noqa: E402
from mlx_gen.constraints.compiled import GrammarCache  # noqa: E402
from mlx_gen.tools import request as tool_request  # noqa: E402
from mlx_gen.tools.formats import FORMATS  # noqa: E402
from mlx_gen.tools.grammar import ToolGrammar, special_tokens, tool_call_lark  # noqa: E402
from mlx_gen.tools.schema import check_tools  # noqa: E402


def ten_tools(salt: str = "") -> list[dict]:
    """Ten tools with realistic parameter schemas (``salt`` makes a fresh set)."""
    out = []
    for i in range(10):
        props = {
            "query": {"type": "string", "maxLength": 200},
            "limit": {"type": "integer", "minimum": 1, "maximum": 100},
            "mode": {"enum": ["fast", "exact", "fuzzy"]},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 5},
            "options": {
                "type": "object",
                "properties": {"verbose": {"type": "boolean"}},
                "additionalProperties": False,
            },
        }
        params = {  # a description unique per tool and set: no schema check is cached
            "type": "object",
            "description": f"Arguments of tool {i}{salt}",
            "properties": props,
            "required": ["query"],
            "additionalProperties": False,
        }
        out.append(
            {
                "type": "function",
                "function": {
                    "name": f"tool_{i}{salt}",
                    "description": f"Tool number {i}",
                    "parameters": params,
                },
            }
        )
    return out


CALL = (
    '<tool_call>\n{"name": "tool_3", "arguments": {"query": "weather in Paris and the '
    'forecast for the next three days", "limit": 10, "mode": "exact", "tags": ["weather", '
    '"paris"], "options": {"verbose": true}}}\n</tool_call>'
)


def grammar(model, tools: list[dict]) -> ToolGrammar:
    specs = check_tools(tools)
    lark = tool_call_lark(
        FORMATS["hermes"],
        specs,
        mode="required",
        parallel=True,
        specials=special_tokens(model.tokenizer),
    )
    return ToolGrammar(lark, "bench")


def compile_ms(model, salt: str, cache: GrammarCache) -> float:
    eos = model.generation_config.eos_token_ids
    start = time.perf_counter()
    compile_constraint(
        grammar(model, ten_tools(salt)),
        model.tokenizer,
        vocab_size=model.vocab_size,
        eos_token_ids=eos,
        cache=cache,
    )
    return (time.perf_counter() - start) * 1000


def cached_ms(model) -> float:
    """A 10-tool set seen before: definitions checked, grammar and matcher from the caches."""
    eos = model.generation_config.eos_token_ids
    tools, specials = ten_tools("_cached"), tuple(sorted(special_tokens(model.tokenizer).items()))
    times = []
    for _ in range(2):
        start = time.perf_counter()
        specs = check_tools(tools)
        constraint = tool_request._tool_grammar(
            FORMATS["hermes"], specs, "required", True, specials, "", ""
        )
        compile_constraint(
            constraint, model.tokenizer, vocab_size=model.vocab_size, eos_token_ids=eos
        )
        times.append((time.perf_counter() - start) * 1000)
    return times[-1]


def matcher_ms(model) -> float:
    """Host time of consume + mask per token of an armed call, replayed."""
    eos = model.generation_config.eos_token_ids
    compiled = compile_constraint(
        grammar(model, ten_tools()), model.tokenizer, vocab_size=model.vocab_size, eos_token_ids=eos
    )
    tokens = list(model.tokenizer.encode(CALL, add_special_tokens=False))
    matcher = Matcher(compiled)
    assert matcher.valid_prefix(tokens) == len(tokens), "the call does not match the grammar"
    start = time.perf_counter()
    matcher.mask()
    for token in tokens:
        matcher.consume(token)
        matcher.mask()
    return (time.perf_counter() - start) * 1000 / len(tokens)


def step_cpu_ms(model, gen: int) -> float:
    """Process CPU ms per token of unconstrained decoding (EOS ignored)."""
    settings = mg.GenerationSettings(max_tokens=gen, temperature=1.0, seed=0, ignore_eos=True)
    cpu = time.process_time()
    mg.generate(model, "The weather in Paris", settings=settings)
    return (time.process_time() - cpu) * 1000 / gen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gen", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--root", default="/tmp/mlx_gen_bench")
    parser.add_argument("--out")
    args = parser.parse_args()
    gen, repeats = (8, 1) if args.quick else (args.gen, args.repeats)
    model = mg.load(bpe_110m(Path(args.root)))
    cache = GrammarCache()
    cache.table(model.tokenizer, model.vocab_size, tuple(model.generation_config.eos_token_ids))
    compiles = [compile_ms(model, f"_{r}", cache) for r in range(repeats)]
    masks = [matcher_ms(model) for _ in range(repeats)]
    steps = [step_cpu_ms(model, gen) for _ in range(repeats)]
    doc = {
        "environment": environment(),
        "vocab_size": model.vocab_size,
        "compile_10_tools_ms": statistics.median(compiles),
        "compile_10_tools_each_ms": compiles,  # the first is the process's first grammar
        "compile_10_tools_cached_ms": cached_ms(model),
        "grammar_ms_per_token": statistics.median(masks),
        "decode_step_cpu_ms": statistics.median(steps),
    }
    doc["grammar_share_of_step"] = doc["grammar_ms_per_token"] / doc["decode_step_cpu_ms"]
    text = json.dumps(doc, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
