"""GPU benchmark: the scale ratios of bench_scale.py, with the algebra on CUDA.

Each line is a ratio measured in one run on one input (``--sections``, default all):

* (1) analyze (``device="cuda"``, one full fine-tune, values only) ÷ bare cuSOLVER ``gesvd``
  singular values of the same ΔW matrices already on the GPU (reading, widening, transfers
  and metrics included on one side only);
* (2) the same analysis on the CPU ÷ on the GPU;
* (3) randomized top-k vs exact singular values on the GPU: time ratio and the relative
  error of the top k;
* (4) a whole comparison with base metrics and two checkpoints (full + LoRA) on CPU ÷ GPU;
* (5) the routes to dense singular values on the GPU, on LLaMA-7B-shaped matrices (4096²,
  11008 × 4096 and its transpose), each against the obvious ``torch.linalg.svdvals(ΔW)``:
  the tall orientation, cuSOLVER's drivers (gesvd, gesvdj), the float64 Gram matrix's
  eigenvalues, and spectra's own pick, with each one's error against float64 on the GPU:
  the measurement behind ``_VALUES_ROUTE`` in spectra/engine/svd.py for CUDA.

Without a usable CUDA device it prints why and exits 0 (so it can run anywhere as-is).

Run: ``python tests/benchmarks/bench_gpu.py [--threads N] [--work DIR] [--hidden 2048]
[--intermediate 5504] [--vocab 8000] [--layers 2] [--sections 1,2,3,4,5]``. Results from an
H200 are in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from _bench import best_time, pin_threads  # this folder (scripts run from here)


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads")
    p.add_argument("--work", type=Path, default=Path("/tmp/spectra-bench-gpu"))
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--intermediate", type=int, default=5504)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--sections", default="1,2,3,4,5", help="which sections to run")
    return p.parse_args()


ARGS = _parse()
pin_threads(ARGS.threads)

import torch  # noqa: E402

torch.set_num_threads(ARGS.threads)
HERE = Path(__file__).resolve().parent


def timed(fn: Callable[[], object], cuda: bool, repeats: int = 2) -> float:
    """Best wall time of ``repeats`` calls, synchronizing the GPU around each when ``cuda``."""
    return best_time(fn, repeats, sync=torch.cuda.synchronize if cuda else None)


def synthetic() -> Path:
    out = ARGS.work / f"h{ARGS.hidden}-i{ARGS.intermediate}-v{ARGS.vocab}-L{ARGS.layers}"
    if not (out / "lora" / "adapter_model.safetensors").exists():
        cmd = [sys.executable, str(HERE / "make_synthetic.py"), str(out), "--layers", str(ARGS.layers),
               "--hidden", str(ARGS.hidden), "--intermediate", str(ARGS.intermediate),
               "--vocab", str(ARGS.vocab), "--shard-size", "200MB"]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True)
    return out


def line(name: str, slow: float, fast: float, slow_name: str, fast_name: str) -> None:
    print(
        f"{name:<44} {slow_name:>9} {slow:>8.3f} s  {fast_name:>9} {fast:>8.3f} s  {slow / fast:>7.2f}x",
        flush=True,
    )


def routes() -> None:
    """(5) Dense singular-value routes on the GPU, 7B shapes, float32 input."""
    from spectra.engine.svd import _svdvals_gram, svd_dense

    gen = torch.Generator(device="cuda").manual_seed(0)
    for shape in [(4096, 4096), (11008, 4096), (4096, 11008)]:
        a = torch.randn(shape, generator=gen, device="cuda")
        tall = a if shape[0] >= shape[1] else a.T
        ref = torch.linalg.svdvals(tall.double())
        calls = {
            "svdvals(ΔW)": lambda a=a: torch.linalg.svdvals(a),
            "svdvals(tall)": lambda t=tall: torch.linalg.svdvals(t),
            "gesvd(tall)": lambda t=tall: torch.linalg.svdvals(t, driver="gesvd"),
            "gesvdj(tall)": lambda t=tall: torch.linalg.svdvals(t, driver="gesvdj"),
            "gram64": lambda a=a: _svdvals_gram(a),
            "spectra": lambda a=a: svd_dense(a, device="cuda")[0],  # the route it picks
        }
        times = {}
        for name, fn in calls.items():
            fn()  # warm-up: cuSOLVER handles and workspaces
            times[name] = timed(fn, cuda=True)
            err = float((fn().to(ref.device).double() - ref).abs().max() / ref[0])
            print(f"(5) {shape[0]}x{shape[1]} {name:<14} {times[name] * 1e3:>9.1f} ms  "
                  f"{times['svdvals(ΔW)'] / times[name]:>6.2f}x vs svdvals(ΔW)  err {err:.1e}",
                  flush=True)  # fmt: skip


def main() -> None:
    if not torch.cuda.is_available():
        print(f"bench_gpu: skipped: no usable CUDA device (torch {torch.__version__}, "
              f"built with CUDA {torch.version.cuda}); run it on a GPU machine")  # fmt: skip
        return
    from spectra.analysis import AnalysisOptions, analyze
    from spectra.engine.randomized import randomized_svd
    from spectra.io import open_tensors
    from spectra.loaders import open_checkpoint

    sections = set(ARGS.sections.split(","))
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}  CPU threads {ARGS.threads}",
          flush=True)  # fmt: skip
    if "5" in sections:
        routes()
    if not sections & {"1", "2", "3", "4"}:
        return
    d = synthetic()
    print(f"set {d.name}", flush=True)
    reader = open_checkpoint(d / "full", base=open_tensors(d / "base"))
    tall = lambda x: x if x.shape[0] >= x.shape[1] else x.T  # noqa: E731
    deltas = [tall(reader.update(m.module).dense.cuda()) for m in reader.modules()]
    values_only = {"against_base": False}
    gpu = AnalysisOptions(device="cuda", **values_only)
    cpu = AnalysisOptions(device="cpu", **values_only)
    analyze(d / "base", [d / "full"], options=gpu)  # warm-up: CUDA context, cuSOLVER handles
    t_gpu = timed(lambda: analyze(d / "base", [d / "full"], options=gpu), cuda=True)
    if "1" in sections:
        # bare: cuSOLVER gesvd, the accurate LAPACK route (the default driver is 1e-3-inaccurate)
        t_bare = timed(lambda: [torch.linalg.svdvals(x, driver="gesvd") for x in deltas], cuda=True)
        line("(1) analyze on cuda vs bare gesvd on cuda", t_gpu, t_bare, "analyze", "gesvd")
        print(f"    analyze / bare gesvd = {t_gpu / t_bare:.2f}x (target <= 1.2)",
              flush=True)  # fmt: skip
    if "2" in sections:
        t_cpu = timed(lambda: analyze(d / "base", [d / "full"], options=cpu), cuda=False, repeats=1)
        line("(2) analyze values only: cpu vs cuda", t_cpu, t_gpu, "cpu", "cuda")

    if "3" in sections:
        k = 16
        big = max(deltas, key=lambda x: x.numel())
        exact = torch.linalg.svdvals(big.double())[:k].cpu()
        t_ex = timed(lambda: torch.linalg.svdvals(big, driver="gesvd"), cuda=True)
        t_rd = timed(lambda: randomized_svd(big, k, device="cuda"), cuda=True)
        approx = randomized_svd(big, k, device="cuda")[0].double()
        err = float(((approx - exact).abs() / exact).max())
        line(
            f"(3) top-{k} of {tuple(big.shape)}: exact vs randomized", t_ex, t_rd, "exact", "random"
        )
        print(f"    randomized max relative error of the top {k}: {err:.1e}", flush=True)

    if "4" in sections:
        both = [d / "full", d / "lora"]
        t_cpu_all = timed(
            lambda: analyze(d / "base", both, options=AnalysisOptions(device="cpu", top_k=16)),
            cuda=False, repeats=1,
        )  # fmt: skip
        t_gpu_all = timed(
            lambda: analyze(d / "base", both, options=AnalysisOptions(device="cuda", top_k=16)),
            cuda=True, repeats=1,
        )  # fmt: skip
        line("(4) full + LoRA, base metrics: cpu vs cuda", t_cpu_all, t_gpu_all, "cpu", "cuda")


if __name__ == "__main__":
    main()
