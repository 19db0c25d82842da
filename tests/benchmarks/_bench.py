"""What every benchmark script shares: pinning the thread count before torch is imported, and
timing a call as the best of a few repeats. Imported by the scripts beside it (run as
``python tests/benchmarks/bench_*.py``, which puts this folder on ``sys.path``)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def pin_threads(threads: int) -> None:
    """Set the OpenMP/MKL/OpenBLAS thread counts; call before torch or numpy is imported
    (their pools read these once, at load; child processes inherit them)."""
    for var in THREAD_VARS:
        os.environ[var] = str(threads)


def best_time(
    fn: Callable[[], object], repeats: int = 2, sync: Callable[[], None] | None = None
) -> float:
    """Best wall time of ``repeats`` calls of ``fn``, seconds; ``sync`` (e.g.
    ``torch.cuda.synchronize``) runs before the clock starts and before it stops."""
    best = float("inf")
    for _ in range(repeats):
        if sync is not None:
            sync()
        t0 = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        best = min(best, time.perf_counter() - t0)
    return best
