"""`spectra diagnose A B C ...`: the cost of one more adapter in one process, against one
`spectra diagnose` process per adapter.

Writes N LLaMA-7B-shaped PEFT LoRA adapters (make_synthetic.py's shapes and layout: the 7
projections of 32 layers, 224 modules, r = 16, bf16; different seeds), then times, each as the
best of --repeats runs of the real console entry point (``python -m spectra``) in a fresh
process:

* ``diagnose A1``            (one adapter, one process: start-up + one adapter)
* ``diagnose A1 ... AN``     (N adapters, one process)
* N separate ``diagnose Ai`` (the baseline: what a shell loop costs)

and prints the marginal cost of one more adapter, (T(N) - T(1)) / (N - 1), and the ratio of
the one-process run to the N separate ones. Threads: 1 (pinned before torch loads; the
children inherit it).

Run: ``python tests/benchmarks/bench_diagnose_many.py [--n 8] [--layers 32] [--keep DIR]``
(about 80 MB of disk per 7B adapter, in a temporary directory unless --keep).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _bench import pin_threads

THREADS = 1
pin_threads(THREADS)

import torch  # noqa: E402  (after pin_threads)
from make_synthetic import PRESETS, Shape, write_lora  # noqa: E402


def _adapters(root: Path, n: int, shape: Shape) -> list[Path]:
    """N adapters ``root/lora_i`` (make_synthetic's write_lora with seed i)."""
    paths = []
    for i in range(n):
        out = root / f"set{i}"
        if not (out / "lora" / "adapter_model.safetensors").is_file():
            write_lora(out, shape, torch.bfloat16, r=16, alpha=32.0, seed=i)
        paths.append(out / "lora")
    return paths


def _spectra(*args: str) -> tuple[float, float]:
    """(wall, CPU) seconds of one ``python -m spectra ...`` process (it must succeed). CPU
    time (user + system, from the children's rusage) is what a busy machine inflates least."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-m", "spectra", *args], capture_output=True, text=True, timeout=3600
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise SystemExit(f"spectra {' '.join(args)} failed ({res.returncode}): {res.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _best(fn: Callable[[], tuple[float, float]], repeats: int) -> tuple[float, float]:
    """The smallest wall and the smallest CPU time over ``repeats`` calls."""
    runs = [fn() for _ in range(repeats)]
    return min(w for w, _ in runs), min(c for _, c in runs)


def _separately(paths: list[str]) -> tuple[float, float]:
    runs = [_spectra("diagnose", x, "-q") for x in paths]
    return sum(w for w, _ in runs), sum(c for _, c in runs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=8, help="adapters (default 8)")
    p.add_argument("--layers", type=int, default=32, help="decoder layers (7B: 32)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--keep", type=Path, help="write (and reuse) the adapters here")
    args = p.parse_args()
    shape = Shape(**(PRESETS["7b"] | {"layers": args.layers}))
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        paths = [str(q) for q in _adapters(root, args.n, shape)]
        modules = len(shape.lora_modules())
        load_before = os.getloadavg()[0]
        one = _best(lambda: _spectra("diagnose", paths[0], "-q"), args.repeats)
        many = _best(lambda: _spectra("diagnose", *paths, "-q"), args.repeats)
        separate = _best(lambda: _separately(paths), args.repeats)
    print(
        f"spectra diagnose, {args.n} LoRA adapters of {modules} modules "
        f"(LLaMA-7B shapes, {args.layers} layers, r = 16, bf16), {THREADS} thread, best of "
        f"{args.repeats}; seconds wall / CPU:"
    )
    rows = (
        ("1 adapter, 1 process", one),
        (f"{args.n} adapters, 1 process", many),
        (f"{args.n} separate processes", separate),
    )
    for name, (wall, cpu) in rows:
        print(f"  {name:<28} {wall:8.2f} / {cpu:8.2f}")
    for i, what in enumerate(("wall", "CPU")):
        marginal = (many[i] - one[i]) / (args.n - 1)
        print(
            f"  {what}: one more adapter costs {marginal:.3f} s ({1e3 * marginal / modules:.2f} ms "
            f"per module); start-up + first adapter {one[i]:.2f} s; one process / separate "
            f"processes = {many[i] / separate[i]:.3f}"
        )
    print(
        f"  load average (1 min) before / after: {load_before:.1f} / {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} cores (wall times are only as good as the machine is quiet)"
    )


if __name__ == "__main__":
    main()
