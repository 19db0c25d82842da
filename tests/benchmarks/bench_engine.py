"""Benchmark of the SVD engine's choices, each as a ratio measured in one run on one input.

(a) factored SVD vs spectra's dense singular values of the same ΔW (4096², r = 16);
(b) the vectorised φ grid vs the per-cell loop (d = 4096, k = 64);
(c) the routes to dense singular values (the pick in spectra/engine/svd.py: ``_VALUES_ROUTE``),
    each against the obvious ``torch.linalg.svdvals(ΔW)``: scipy gesdd, torch gesdd on the
    tall orientation, and the float64 Gram matrix's eigenvalues; with each route's error
    max |σ − σ_ref| / σ₁ against float64 gesdd of the same matrix.

Run: ``python tests/benchmarks/bench_engine.py [--threads N] [--size 4096] [--rank 16] [--k 64]``.
Thread count (default 2) is set for torch, MKL, OpenBLAS and OpenMP before they are imported.
Times are the best of several repeats (one repeat for the 4096² dense SVDs).
"""

from __future__ import annotations

import argparse
import sys
import time

from _bench import best_time, pin_threads  # this folder (scripts run from here)


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="BLAS/LAPACK/torch threads (default 2)")
    p.add_argument("--size", type=int, default=4096, help="out = in of the big ΔW (default 4096)")
    p.add_argument("--rank", type=int, default=16, help="inner rank r of the factored ΔW")
    p.add_argument("--k", type=int, default=64, help="basis size of the φ grid")
    return p.parse_args()


ARGS = _parse()
pin_threads(ARGS.threads)

import torch  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from spectra.engine.subspace import phi_grid, phi_grid_loop  # noqa: E402
from spectra.engine.svd import svd_dense, svd_factored  # noqa: E402

torch.set_num_threads(ARGS.threads)


def row(name: str, slow: float, fast: float, slow_name: str, fast_name: str) -> str:
    return (
        f"{name:<34} {slow_name:>10} {slow * 1e3:>11.2f} ms  {fast_name:>10} "
        f"{fast * 1e3:>10.2f} ms  {slow / fast:>9.1f}x"
    )


ROUTES = ("scipy", "torch", "gram")  # svd_dense backends; the obvious baseline is svdvals(a)
# ``spectra`` in the output is svd_dense's own pick (backend="auto") for that shape


def dense_routes(shape: tuple[int, int], dtype: torch.dtype, repeats: int) -> list[str]:
    """Time and error of every route to the singular values of a Gaussian of ``shape``."""
    a = torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape)), dtype=dtype)
    ref = torch.linalg.svdvals(a.double())
    calls = {"svdvals(ΔW)": lambda: torch.linalg.svdvals(a)}
    calls |= {
        r: (lambda r=r: svd_dense(a, backend=r)[0])
        for r in ROUTES
        if r != "gram" or dtype == torch.float32
    }
    calls["spectra"] = lambda: svd_dense(a)[0]  # the route it picks (auto)
    times = dict.fromkeys(calls, float("inf"))
    for _ in range(repeats):  # interleaved, so a burst of load hits all alike
        for name, fn in calls.items():
            times[name] = min(times[name], best_time(fn, 1))
            time.sleep(0.2)  # OpenBLAS's threads spin after a call: let them sleep first
    base = times["svdvals(ΔW)"]
    lines = []
    for name, fn in calls.items():
        err = float((fn().double() - ref).abs().max() / ref[0])
        lines.append(
            f"(c) {shape[0]}x{shape[1]} {str(dtype)[6:]:<8} {name:<12} {times[name] * 1e3:>10.1f} ms"
            f"  {base / times[name]:>6.2f}x vs svdvals(ΔW)   err {err:.1e}"
        )
    return lines


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
    lines: list[str] = []
    with threadpool_limits(limits=ARGS.threads):
        for shape, dtype, reps in [
            ((1024, 1024), torch.float32, 3),
            ((2048, 2048), torch.float32, 2),
            ((4096, 4096), torch.float32, 1),  # above the CPU's Gram limit: auto = gesdd
            ((2048, 5504), torch.float32, 2),
            ((5504, 2048), torch.float32, 2),
            ((1024, 1024), torch.float64, 3),
            ((2048, 5504), torch.float64, 1),
        ]:
            lines += dense_routes(shape, dtype, reps)
        a = torch.randn(ARGS.size, ARGS.size, generator=torch.Generator().manual_seed(3))
        big_dense = best_time(lambda: svd_dense(a), 1)  # spectra's own dense route
        fact_line, err = bench_factored(ARGS.size, ARGS.rank, big_dense)
        lines.append(fact_line)
        lines.append(bench_phi(ARGS.size, ARGS.k))
    for line in lines:
        print(line)
    print(f"(a) factored vs float64 dense: max |Δσ| / σ1 = {err:.1e}")
    print(
        "(c) torch = gesdd on the tall orientation; gram = eigenvalues of the float64 Gram matrix"
    )


if __name__ == "__main__":
    main()
