"""Decode time per token with every control on, in one process, against mlx-lm plain.

    python benchmarks/bench_controls.py --models stories260K,110M --repeats 9

Fresh processes (``bench_generate.py``) add start-up noise that hides differences of
a few percent; here the settings alternate inside one process, each repeat a fresh
call on the same prompt, in a rotating order: mlx-lm plain, mlx_gen plain, mlx_gen
plain with MLX's reference RMSNorm / RoPE layers (``mlx_gen/loading/cpu_layers.py``
undone), mlx_gen with all controls (compiled tail), and the same controls with the
tail uncompiled (``StepTail(compiled=False)``: the chain as it was built before). Decode time per
token is measured after the first token, as wall-clock time and as the process's CPU
time (all threads: the Python thread building steps and MLX's evaluating them). On a
machine shared with other work, wall-clock time mostly measures the others; CPU time
per token is the work each engine does and varies far less. Reported: min and median
ms per token and each setting's ratio of tokens/s to mlx-lm plain (medians), for both
clocks.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402
import mlx_lm  # noqa: E402
from mlx_lm.models.cache import make_prompt_cache  # noqa: E402
from presets import PRESETS, write_preset  # noqa: E402
from worker import controls  # noqa: E402

import mlx_gen as mg  # noqa: E402
import mlx_gen.decode as decode  # noqa: E402
from mlx_gen.loading.cpu_layers import CompiledRMSNorm, CompiledRoPE  # noqa: E402
from mlx_gen.step_tail import StepTail  # noqa: E402


class UncompiledTail(StepTail):
    """The same chain, called op by op every step."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **dict(kwargs, compiled=False))


def _ms_per_token(chunks) -> tuple[float, float]:
    """(wall-clock, CPU) ms per token after the first."""
    next(chunks)
    start, cpu = time.perf_counter(), time.process_time()
    n = sum(1 for _ in chunks)
    return (time.perf_counter() - start) / n * 1000, (time.process_time() - cpu) / n * 1000


def step_primitives(model, prompt: list[int]) -> int:
    """Primitives in one decode step's forward graph (after a prefill of ``prompt``)."""
    cache = make_prompt_cache(model)
    mx.eval(model(mx.array([prompt]), cache=cache))
    dot = io.StringIO()
    mx.export_to_dot(dot, model(mx.array([[prompt[-1]]]), cache=cache))
    return sum("shape=rectangle" in line for line in dot.getvalue().splitlines())


def runners(folder: str, prompt_len: int, gen: int) -> dict:
    model = mg.load(folder)
    lm, tokenizer = mlx_lm.load(folder)
    vocab = model.vocab_size
    prompt = [3 + (7 * i) % (vocab - 3) for i in range(prompt_len)]
    print(
        f"forward primitives per decode step: mlx_gen {step_primitives(model.model, prompt)}, "
        f"mlx-lm {step_primitives(lm, prompt)}"
    )
    plain = mg.GenerationSettings(max_tokens=gen, ignore_eos=True)
    full = mg.GenerationSettings(max_tokens=gen, ignore_eos=True, **controls(vocab))

    reference = mg.load(folder)  # the same model with MLX's reference RMSNorm / RoPE
    for _, module in reference.model.named_modules():
        if type(module) is CompiledRMSNorm:
            module.__class__ = nn.RMSNorm
        elif type(module) is CompiledRoPE:
            module.__class__ = nn.RoPE

    def gen_run(settings, tail=StepTail, loaded=model):
        decode.StepTail = tail
        try:
            chunks = mg.stream_generate(loaded, prompt, settings=settings)
            return _ms_per_token(c.token for c in chunks)
        finally:
            decode.StepTail = StepTail

    def lm_run():
        return _ms_per_token(
            r.token for r in mlx_lm.stream_generate(lm, tokenizer, prompt, max_tokens=gen)
        )

    return {
        "mlx_lm plain": lm_run,
        "mlx_gen plain": lambda: gen_run(plain),
        "mlx_gen plain, uncompiled layers": lambda: gen_run(plain, loaded=reference),
        "mlx_gen controls": lambda: gen_run(full),
        "mlx_gen controls, uncompiled tail": lambda: gen_run(full, UncompiledTail),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="stories260K,110M")
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--gen", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--root", type=Path, default=HERE / ".models")
    parser.add_argument(
        "--stories", type=Path, default=HERE.parents[1] / "shared" / "models" / "stories260K"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    print(f"device {mx.default_device()}, mlx {mx.__version__}, {args.repeats} repeats")
    report = {}
    for name in args.models.split(","):
        folder = args.stories if name == "stories260K" else name
        if name in PRESETS:
            folder = write_preset(name, args.root)
        runs = runners(str(folder), args.prompt_len, args.gen)
        for run in runs.values():  # warm-up: compile and allocate once
            run()
        wall: dict[str, list[float]] = {k: [] for k in runs}
        cpu: dict[str, list[float]] = {k: [] for k in runs}
        names = list(runs)
        for r in range(args.repeats):
            for k in names[r % len(names) :] + names[: r % len(names)]:
                w, c = runs[k]()
                wall[k].append(w)
                cpu[k].append(c)
        print(f"\n{name}: ms per token (min / median) and ratio of tokens/s to mlx-lm plain")
        print(
            f"  {'setting':34s} {'wall-clock':>17s} {'ratio':>7s} {'CPU time':>17s} {'ratio':>7s}"
        )
        base_w, base_c = (statistics.median(t["mlx_lm plain"]) for t in (wall, cpu))
        for k in runs:
            mw, mc = statistics.median(wall[k]), statistics.median(cpu[k])
            print(
                f"  {k:34s} {min(wall[k]):7.3f} / {mw:7.3f} {base_w / mw:6.3f}x "
                f"{min(cpu[k]):7.3f} / {mc:7.3f} {base_c / mc:6.3f}x"
            )
        report[name] = {k: {"wall_ms": wall[k], "cpu_ms": cpu[k]} for k in runs}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"device": str(mx.default_device()), **report}, indent=1))


if __name__ == "__main__":
    main()
