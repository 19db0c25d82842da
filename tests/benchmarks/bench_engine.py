"""Benchmark of the SVD engine's choices, each as a ratio measured in one run on one input.

(a) factored SVD vs the best exact dense singular values of the same ΔW (4096², r = 16);
(b) the vectorised φ grid vs the per-cell loop (d = 4096, k = 64);
(c) scipy gesdd vs torch svdvals for dense float32/float64 matrices (the pick in
    spectra/engine/svd.py: ``_CPU_VALUES_BACKEND``).

Run: ``python tests/benchmarks/bench_engine.py [--threads N] [--size 4096] [--rank 16] [--k 64]``.
Thread count (default 2) is set for torch, MKL, OpenBLAS and OpenMP before they are imported.
Times are the best of several repeats (one repeat for the 4096² dense SVDs).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="BLAS/LAPACK/torch threads (default 2)")
    p.add_argument("--size", type=int, default=4096, help="out = in of the big ΔW (default 4096)")
    p.add_argument("--rank", type=int, default=16, help="inner rank r of the factored ΔW")
    p.add_argument("--k", type=int, default=64, help="basis size of the φ grid")
    return p.parse_args()


ARGS = _parse()
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)

import torch  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from spectra.engine.subspace import phi_grid, phi_grid_loop  # noqa: E402
from spectra.engine.svd import svd_dense, svd_factored  # noqa: E402

torch.set_num_threads(ARGS.threads)


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """Best wall time of ``repeats`` calls, seconds."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def row(name: str, slow: float, fast: float, slow_name: str, fast_name: str) -> str:
    return (
        f"{name:<34} {slow_name:>10} {slow * 1e3:>11.2f} ms  {fast_name:>10} "
        f"{fast * 1e3:>10.2f} ms  {slow / fast:>9.1f}x"
    )


def dense_backends(n: int, dtype: torch.dtype, repeats: int) -> tuple[float, float]:
    """(scipy gesdd, torch svdvals) seconds for singular values of an n × n Gaussian."""
    a = torch.randn(n, n, generator=torch.Generator().manual_seed(n), dtype=dtype)
    t_scipy, t_torch = float("inf"), float("inf")
    for _ in range(repeats):  # interleaved, so a burst of load hits both alike
        t_scipy = min(t_scipy, best_time(lambda: svd_dense(a, backend="scipy"), 1))
        t_torch = min(t_torch, best_time(lambda: svd_dense(a, backend="torch"), 1))
    return t_scipy, t_torch


def bench_factored(n: int, r: int, dense_best: float) -> tuple[str, float]:
    gen = torch.Generator().manual_seed(1)
    left, right = torch.randn(n, r, generator=gen), torch.randn(r, n, generator=gen)
    t_fact = best_time(lambda: svd_factored(left, right), 20)
    s_fact = svd_factored(left, right)[0].double()
    s_ref = torch.linalg.svdvals(left.double() @ right.double())[:r]
    err = float((s_fact - s_ref).abs().max() / s_ref[0])
    return row(f"(a) values, {n}² r={r}", dense_best, t_fact, "dense", "factored"), err


def bench_phi(d: int, k: int) -> str:
    gen = torch.Generator().manual_seed(2)
    u1 = torch.linalg.qr(torch.randn(d, k, generator=gen, dtype=torch.float64))[0]
    u2 = torch.linalg.qr(torch.randn(d, k, generator=gen, dtype=torch.float64))[0]
    t_vec = best_time(lambda: phi_grid(u1, u2), 5)
    t_loop = best_time(lambda: phi_grid_loop(u1, u2), 1)
    assert torch.allclose(phi_grid(u1, u2), phi_grid_loop(u1, u2), atol=1e-12)
    return row(f"(b) phi grid, d={d} k={k}", t_loop, t_vec, "loop", "vectorised")


def main() -> None:
    print(f"threads={ARGS.threads}  torch {torch.__version__}  python {sys.version.split()[0]}")
    print(f"{'case':<34} {'slow':>10} {'time':>14}  {'fast':>10} {'time':>13}  {'ratio':>10}")
    lines = []
    with threadpool_limits(limits=ARGS.threads):
        sizes = [
            (1024, torch.float32, 3),
            (ARGS.size, torch.float32, 1),
            (1024, torch.float64, 3),
            (2048, torch.float64, 1),
        ]
        big_dense = None
        for n, dtype, reps in sizes:
            t_scipy, t_torch = dense_backends(n, dtype, reps)
            name = f"(c) dense values {n}² {str(dtype)[6:]}"
            lines.append(row(name, t_scipy, t_torch, "scipy", "torch"))
            if n == ARGS.size and dtype == torch.float32:
                big_dense = min(t_scipy, t_torch)
        assert big_dense is not None
        fact_line, err = bench_factored(ARGS.size, ARGS.rank, big_dense)
        lines.append(fact_line)
        lines.append(bench_phi(ARGS.size, ARGS.k))
    for line in lines:
        print(line)
    print(f"(a) factored vs float64 dense: max |Δσ| / σ1 = {err:.1e}")
    print("(c) ratio > 1: torch faster than scipy")


if __name__ == "__main__":
    main()
