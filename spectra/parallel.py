"""Where per-module work runs: in this process, in a pool of local processes, or on a Dask
cluster. One seam (:class:`Executor`), three backends, the same results.

Every backend runs a picklable module-level function on picklable items and yields the results
**in the order of the items**, so the caller assembles the same output whichever ran it. The
work function opens the checkpoint files itself in each worker (readers hold open files and are
never pickled); with Dask on a real cluster the files must be at the same path on every worker
(a shared filesystem).

Threads are budgeted so nothing oversubscribes the cores: a process pool of N workers gives
each worker ``cores // N`` torch/BLAS threads (``workers × threads ≤ cores``); Dask's nanny
already starts each worker process with one BLAS thread (``OMP_NUM_THREADS=1``), so start
workers with ``--nworkers`` (processes) rather than ``--nthreads``, or pass ``threads``.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

import torch

from spectra.errors import OptionError

T = TypeVar("T")
R = TypeVar("R")
ExecutorKind = Literal["serial", "process", "dask"]
EXECUTOR_KINDS: tuple[ExecutorKind, ...] = ("serial", "process", "dask")


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def thread_budget(workers: int, cores: int | None = None) -> int:
    """Threads per worker so that workers × threads ≤ cores: max(1, cores // workers)."""
    if workers < 1:
        raise OptionError(f"--workers must be at least 1, got {workers}")
    return max(1, (available_cores() if cores is None else cores) // workers)


def limit_threads(threads: int) -> None:
    """Set this process's torch intra-op threads (and, when threadpoolctl is installed, the
    BLAS/OpenMP pools scipy and numpy use) to ``threads``."""
    torch.set_num_threads(threads)
    with contextlib.suppress(ImportError):
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads)  # applies now, for the life of the process


class Executor(Protocol):
    """Runs ``fn`` over ``items`` somewhere; results come back in the order of ``items``.

    Attributes:
        kind: ``"serial"``, ``"process"`` or ``"dask"``.
        workers: How many items may run at once (1 for serial).
    """

    kind: ExecutorKind
    workers: int

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
        """``fn(item)`` for every item, yielded in item order (``fn``, items picklable)."""
        ...

    def close(self) -> None:
        """Release the workers (idempotent)."""
        ...


class SerialExecutor:
    """Runs everything here, one item after the other (threads: this process's setting)."""

    kind: ExecutorKind = "serial"
    workers = 1

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
        return (fn(item) for item in items)

    def close(self) -> None:
        return None


class ProcessExecutor:
    """A pool of ``workers`` local processes, each limited to ``threads`` threads.

    Workers start from a fork server (spawn where the platform has none), never by forking
    this process: a fork of a process whose OpenMP pool already ran can hang. As with any
    such pool, a script that creates one must guard its entry point
    (``if __name__ == "__main__":``); the ``spectra`` CLI does.

    Args:
        workers: Number of processes (≥ 1).
        threads: Threads per worker; default ``cores // workers``.
    """

    kind: ExecutorKind = "process"

    def __init__(self, workers: int, threads: int | None = None):
        self.workers = workers
        self.threads = thread_budget(workers) if threads is None else threads
        if self.threads < 1:
            raise OptionError(f"--threads must be at least 1, got {self.threads}")
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        if ctx.get_start_method() == "forkserver":
            # the server imports these once; each worker forks from it with them loaded
            ctx.set_forkserver_preload(["torch", "spectra.analysis"])
        self._pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=ctx, initializer=limit_threads, initargs=(self.threads,)
        )

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
        return self._pool.map(fn, items)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class DaskExecutor:
    """Items as tasks on a Dask distributed cluster (``pip install 'spectra-ft[scale]'``).

    Args:
        scheduler: A scheduler address (``tcp://host:8786``), a ``distributed.Client``, or
            None to start a local cluster of ``workers`` single-threaded processes.
        workers: Size of the local cluster when ``scheduler`` is None.
        threads: Threads per task (torch/BLAS); default: leave the worker's setting (Dask's
            nanny starts worker processes with one).

    Raises:
        OptionError: ``distributed`` is not installed, or the scheduler cannot be reached.
    """

    kind: ExecutorKind = "dask"

    def __init__(self, scheduler: Any = None, *, workers: int = 1, threads: int | None = None):
        try:
            from distributed import Client, LocalCluster
        except ImportError as e:
            raise OptionError(
                "--executor dask needs Dask distributed: pip install 'spectra-ft[scale]'"
            ) from e
        self.threads = threads
        self._own: list[Any] = []  # what close() shuts down (not a client passed in)
        if isinstance(scheduler, Client):
            self._client = scheduler
        else:
            if scheduler is None:
                cluster = LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
                )
                self._own.append(cluster)
                scheduler = cluster
            try:
                self._client = Client(scheduler, timeout="20s")
            except (OSError, TimeoutError) as e:
                raise OptionError(
                    f"cannot reach the Dask scheduler at {scheduler!r} ({e}); start one with "
                    "`dask scheduler` and workers with `dask worker ADDRESS`, then pass its "
                    "address to --scheduler"
                ) from e
            self._own.insert(0, self._client)
        self.workers = max(1, sum(self._client.nthreads().values()))

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
        call = functools.partial(_with_threads, fn, self.threads)
        futures = self._client.map(call, list(items), pure=False)
        try:
            for future in futures:
                yield future.result()
        finally:
            self._client.cancel(futures)  # a failure or an interrupt stops the rest

    def close(self) -> None:
        for thing in self._own:
            thing.close()
        self._own = []


def _with_threads(fn: Callable[[T], R], threads: int | None, item: T) -> R:
    if threads is not None:
        limit_threads(threads)
    return fn(item)


@dataclass(frozen=True)
class ExecutionOptions:
    """How to run an analysis (never changes its results, so not recorded in them).

    Attributes:
        executor: ``"serial"``, ``"process"`` or ``"dask"``; default (None): serial for one
            worker, a process pool for more (so ``--workers 2`` alone is enough).
        workers: Processes for ``"process"``, or the size of a local Dask cluster.
        scheduler: Dask scheduler address (``tcp://host:8786``); None starts a local cluster.
        threads: torch/BLAS threads per worker; default ``cores // workers`` for processes,
            this process's setting for serial, the worker's setting (one) for Dask.
    """

    executor: ExecutorKind | None = None
    workers: int = 1
    scheduler: str | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.executor is not None and self.executor not in EXECUTOR_KINDS:
            raise OptionError(
                f"--executor must be one of {', '.join(EXECUTOR_KINDS)}, got {self.executor!r}"
            )
        if self.workers < 1:
            raise OptionError(f"--workers must be at least 1, got {self.workers}")
        if self.threads is not None and self.threads < 1:
            raise OptionError(f"--threads must be at least 1, got {self.threads}")
        if self.scheduler is not None and self.executor != "dask":
            raise OptionError("--scheduler needs --executor dask")
        if self.executor == "serial" and self.workers > 1:
            raise OptionError("--executor serial runs one worker: drop --workers or pick process")

    @property
    def kind(self) -> ExecutorKind:
        """The executor that runs: the one asked for, else serial or process by ``workers``."""
        if self.executor is not None:
            return self.executor
        return "process" if self.workers > 1 else "serial"


@contextlib.contextmanager
def make_executor(options: ExecutionOptions) -> Iterator[Executor]:
    """The executor ``options`` ask for (:attr:`ExecutionOptions.kind`), closed on exit."""
    kind = options.kind
    executor: Executor
    if kind == "process":
        executor = ProcessExecutor(options.workers, options.threads)
    elif kind == "dask":
        executor = DaskExecutor(options.scheduler, workers=options.workers, threads=options.threads)
    else:
        if options.threads is not None:
            limit_threads(options.threads)
        executor = SerialExecutor()
    try:
        yield executor
    finally:
        executor.close()
