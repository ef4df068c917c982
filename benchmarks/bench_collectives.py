"""What one all-reduce costs between 2 ranks on this host, alone and between matmuls.

    mlx.launch -n 2 --backend ring python benchmarks/bench_collectives.py

Rank 0 prints the time per ``all_sum`` of a decode-shaped (1, 768) float32 row evaluated
alone, per (768 x 768 matmul + ``all_sum``) pair evaluated one at a time and 24 chained
in one graph (a 12-layer model's two all-reduces per layer), and per matmul alone.
"""

from __future__ import annotations

import time

import mlx.core as mx


def per_call(fn, n: int = 20) -> float:
    """Milliseconds per ``fn()`` (evaluated), after 3 warm-up calls."""
    for _ in range(3):
        mx.eval(fn())
    start = time.perf_counter()
    for _ in range(n):
        mx.eval(fn())
    return (time.perf_counter() - start) / n * 1e3


def main() -> None:
    group = mx.distributed.init()
    w = mx.random.normal((768, 768), key=mx.random.key(0))
    x = mx.ones((1, 768))
    mx.eval(w, x)

    def chain(k: int) -> mx.array:
        y = x
        for _ in range(k):
            y = mx.distributed.all_sum(y @ w, group=group) * 0.01
        return y

    rows = {
        "all_sum alone": per_call(lambda: mx.distributed.all_sum(x, group=group), 200),
        "matmul + all_sum, 1 per eval": per_call(lambda: chain(1)),
        "matmul + all_sum, 24 chained, per pair": per_call(lambda: chain(24)) / 24,
        "matmul alone": per_call(lambda: x @ w),
    }
    if group.rank() == 0:
        for name, ms in rows.items():
            print(f"{name}: {ms:.2f} ms")


if __name__ == "__main__":
    main()
