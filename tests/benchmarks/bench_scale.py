"""Scale benchmarks: each section prints ratios measured in one run on one input.

Sections (all by default, or name some):

* ``e2e``: end-to-end dense analysis (``analyze``, one full fine-tune, values only) ÷ bare
  LAPACK singular values (``torch.linalg.svdvals`` on the tall orientation) of the same ΔW
  matrices, already in memory (target ≤ 1.2×); and ÷ the bare route spectra takes (float64
  Gram + syevd), which is the reading/widening/metrics overhead alone.
* ``memory``: peak RSS of a full analysis at three checkpoint sizes (same largest matrix, more
  layers), each in a fresh process, against the obvious way (every tensor read through
  safetensors' memory map and widened): flat vs growing.
* ``workers``: ``--workers 2`` (2 processes × threads/2) ÷ serial (1 process × threads).
* ``randomized``: randomized top-k (p, q) vs exact singular values: time ratio and the
  relative error of the top k, on a generated full fine-tune ΔW, a Gaussian (flat spectrum)
  and a matrix with σ_i = 0.9^i.
* ``weightwatcher``: WeightWatcher 0.7 (``--ww-python``: an interpreter that has it) on the
  same LoRA adapter and the same full pair: time ratio, and where its numbers differ.
* ``big``: on a directory made by ``make_synthetic.py --scale 7b`` (``--big``): the LoRA
  adapter's full ``compare`` time; streaming every ΔW of the 27 GB pair (peak RSS); an exact
  analysis of a few layers and a randomized analysis of all of them (time, peak RSS).

The mid-sized synthetic model (``--hidden``, ``--intermediate``, ``--vocab``, ``--layers``) is
generated under ``--work`` on first use. Thread count (default 2) is set for torch, MKL,
OpenBLAS and OpenMP before they are imported; child processes get the same.

Run: ``python tests/benchmarks/bench_scale.py [SECTION ...] [--threads 2] [--work DIR]
[--big DIR] [--ww-python PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from _bench import best_time, pin_threads  # this folder (scripts run from here)

SECTIONS = ("e2e", "memory", "workers", "randomized", "weightwatcher", "big")


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "sections", nargs="*", help=f"any of {', '.join(SECTIONS)} (default: all but big)"
    )
    p.add_argument("--threads", type=int, default=2, help="BLAS/LAPACK/torch threads (default 2)")
    p.add_argument("--work", type=Path, default=Path("/tmp/spectra-bench"), help="generated sets")
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--intermediate", type=int, default=5504)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--mem-layers", default="2,8,32", help="layer counts of the memory section")
    p.add_argument("--mem-hidden", type=int, default=1024)
    p.add_argument("--mem-intermediate", type=int, default=2752)
    p.add_argument("--mem-vocab", type=int, default=16000)
    p.add_argument("--big", type=Path, help="a make_synthetic.py --scale 7b directory")
    p.add_argument("--big-layers", default="0|31", help="layers analysed exactly in 'big'")
    p.add_argument("--ww-python", help="python with weightwatcher==0.7.* (for 'weightwatcher')")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)  # internal: one measurement
    return p.parse_args()


ARGS = _parse()
pin_threads(ARGS.threads)

import torch  # noqa: E402

torch.set_num_threads(ARGS.threads)
HERE = Path(__file__).resolve().parent


# ---------------------------------------------------------------- measuring in a child process


def _status_mb(field: str) -> float:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+)", text).group(1)) / 1024  # type: ignore[union-attr]


def _child_main(mode: str, args: list[str]) -> None:
    """One measurement in this (fresh) process; prints one JSON line."""
    from spectra.analysis import AnalysisOptions, analyze
    from spectra.io import open_tensors
    from spectra.loaders import open_checkpoint

    baseline = _status_mb("VmRSS")  # python + torch + spectra, before any work
    t0 = time.perf_counter()
    extra: dict[str, object] = {}
    if mode == "analyze":  # args: base ckpt options-json
        opts = AnalysisOptions(**json.loads(args[2]))
        result = analyze(args[0], [args[1]], options=opts)
        extra["modules"] = len(result["modules"])
    elif mode == "stream":  # every ΔW through FullReader (what analyze reads), no SVD
        reader = open_checkpoint(args[1], base=open_tensors(args[0]))
        for info in reader.modules():
            reader.update(info.module)
        extra["modules"] = len(reader.modules())
    elif mode == "mmap":  # the obvious way: safetensors get (memory map) + widen + subtract
        base, tuned = open_tensors(args[0]), open_tensors(args[1])
        for key in tuned.keys():  # noqa: SIM118 (TensorSource is not iterable)
            if len(tuned.shape(key)) == 2:
                (tuned.get(key).float() - base.get(key).float()).abs_()
    print(json.dumps({"peak_mb": _status_mb("VmHWM"), "baseline_mb": baseline,
                      "seconds": time.perf_counter() - t0, **extra}))  # fmt: skip


def measure(mode: str, *args: str, python: str | None = None) -> dict[str, float]:
    """Run one measurement in a fresh process (peak RSS is per process) and parse its line."""
    cmd = [
        python or sys.executable,
        __file__,
        "--threads",
        str(ARGS.threads),
        "--child",
        mode,
        *args,
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# ---------------------------------------------------------------- inputs


def synthetic(
    layers: int | None = None,
    hidden: int | None = None,
    inter: int | None = None,
    vocab: int | None = None,
) -> Path:
    """A generated base/full/lora set under --work (made once); sizes default to the mid set."""
    layers, hidden = layers or ARGS.layers, hidden or ARGS.hidden
    inter, vocab = inter or ARGS.intermediate, vocab or ARGS.vocab
    out = ARGS.work / f"h{hidden}-i{inter}-v{vocab}-L{layers}-5GB"
    if not (out / "lora" / "adapter_model.safetensors").exists():
        # 5 GB shards, as Hugging Face saves: a memory map then covers the whole checkpoint
        cmd = [sys.executable, str(HERE / "make_synthetic.py"), str(out), "--layers", str(layers),
               "--hidden", str(hidden), "--intermediate", str(inter), "--vocab", str(vocab),
               "--shard-size", "5GB"]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True)
    return out


def header(title: str) -> None:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"\n== {title}  (threads={ARGS.threads}, cores={os.cpu_count()}, load={load:.1f})",
        flush=True,
    )


# ---------------------------------------------------------------- sections


def bench_e2e() -> None:
    from spectra.analysis import AnalysisOptions, analyze
    from spectra.engine.svd import _svdvals_gram
    from spectra.io import open_tensors
    from spectra.loaders import open_checkpoint

    d = synthetic()
    header(f"e2e: analyze (values only) vs bare singular values, module by module, {d.name}")
    reader = open_checkpoint(d / "full", base=open_tensors(d / "base"))
    t_e2e = t_gesdd = t_gram = 0.0
    for info in reader.modules():
        delta = reader.update(info.module).dense  # (out, in) float32, in memory
        tall = delta if delta.shape[0] >= delta.shape[1] else delta.T
        # one module at a time, alternating, best of 2: a burst of load hits all alike.
        # analyze reopens the files per call (a few ms): counted against it
        opts = AnalysisOptions(against_base=False, modules=f"^{re.escape(info.module)}$")
        gesdd = gram = e2e = float("inf")
        for _ in range(2):
            gesdd = min(gesdd, best_time(lambda x=tall: torch.linalg.svdvals(x), 1))
            gram = min(gram, best_time(lambda x=delta: _svdvals_gram(x), 1))
            e2e = min(
                e2e, best_time(lambda o=opts: analyze(d / "base", [d / "full"], options=o), 1)
            )
        t_gesdd, t_gram, t_e2e = t_gesdd + gesdd, t_gram + gram, t_e2e + e2e
    print(f"{len(reader.modules())} dense ΔW, largest {max(m.shape for m in reader.modules())}")
    print(f"bare LAPACK gesdd (svdvals, tall) {t_gesdd:8.2f} s   bare float64 Gram + syevd "
          f"{t_gram:8.2f} s   analyze end to end {t_e2e:8.2f} s")  # fmt: skip
    print(
        f"analyze / bare gesdd = {t_e2e / t_gesdd:.3f}x (target <= 1.2)   "
        f"analyze / its own bare route = {t_e2e / t_gram:.3f}x (the overhead)"
    )


def bench_memory() -> None:
    h, i, v = ARGS.mem_hidden, ARGS.mem_intermediate, ARGS.mem_vocab
    header(f"memory: peak RSS vs layers (h={h}, i={i}, vocab={v})")
    largest = 4 * max(v, i) * h / 2**20
    print(
        f"largest matrix in float32: {largest:.0f} MB; peak RSS above the baseline, in MB and in units of it"
    )
    print(f"{'layers':>6} {'ckpt GB':>8} {'mmap+widen':>11} {'stream ΔW':>10} {'analyze':>8} {'x':>5} "
          f"{'+base metrics*':>15} {'x':>5}")  # fmt: skip
    no_base = json.dumps({"against_base": False})
    # base metrics cost 3 SVDs with vectors per module: measured on the same few modules at every
    # size (embedding, head, layer 0), which hold the largest matrices
    few = json.dumps({"modules": r"layers\.0\.|embed_tokens|lm_head"})
    for layers in (int(n) for n in ARGS.mem_layers.split(",")):
        d = synthetic(layers, h, i, v)
        gb = sum(f.stat().st_size for f in (d / "full").glob("*.safetensors")) / 1e9
        mm = measure("mmap", str(d / "base"), str(d / "full"))
        st = measure("stream", str(d / "base"), str(d / "full"))
        an = measure("analyze", str(d / "base"), str(d / "full"), no_base)
        bm = measure("analyze", str(d / "base"), str(d / "full"), few)
        above = lambda m: m["peak_mb"] - m["baseline_mb"]  # noqa: E731
        print(f"{layers:>6} {gb:>8.2f} {above(mm):>11.0f} {above(st):>10.0f} {above(an):>8.0f} "
              f"{above(an) / largest:>5.1f} {above(bm):>15.0f} {above(bm) / largest:>5.1f}")  # fmt: skip
    print(
        f"(baseline ≈ {an['baseline_mb']:.0f} MB: python + torch + spectra after imports. "
        "mmap+widen: every tensor read through safetensors' memory map, the obvious way. "
        "*: embedding, head and layer 0 only)"
    )


def bench_workers() -> None:
    from spectra.analysis import AnalysisOptions, analyze
    from spectra.parallel import ProcessExecutor
    from spectra.results import dumps_result

    d = synthetic()
    header(
        f"workers: 2 processes x {max(1, ARGS.threads // 2)} thread(s) vs serial x {ARGS.threads}, {d.name}"
    )
    opts = AnalysisOptions(against_base=False)
    pool = ProcessExecutor(2, threads=max(1, ARGS.threads // 2))
    list(pool.map(abs, [1, 2]))  # start the workers before timing
    results: dict[str, str] = {}
    t_serial = t_pool = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        results["serial"] = dumps_result(
            analyze(d / "base", [d / "full", d / "lora"], options=opts)
        )
        t_serial = min(t_serial, time.perf_counter() - t0)
        t0 = time.perf_counter()
        results["pool"] = dumps_result(
            analyze(d / "base", [d / "full", d / "lora"], options=opts, executor=pool)
        )
        t_pool = min(t_pool, time.perf_counter() - t0)
    pool.close()
    same = "byte-identical" if results["serial"] == results["pool"] else "differs"
    print(
        f"serial {t_serial:8.2f} s   --workers 2 {t_pool:8.2f} s   speed-up {t_serial / t_pool:.2f}x   JSON {same}"
    )
    sigma, phi = _max_rel_diff(results), _max_phi_diff(results)
    print(f"    LAPACK at {pool.threads} vs {ARGS.threads} threads: max |Δσ|/σ_1 = {sigma:.1e}, "
          f"max |Δφ| = {phi:.1e}")  # fmt: skip


def _max_phi_diff(results: dict[str, str]) -> float:
    """Largest |φ_a − φ_b| over every φ grid of two results (same pairs)."""
    a, b = (json.loads(results[k])["similarity"] for k in ("serial", "pool"))
    worst = 0.0
    for pa, pb in zip(a, b, strict=True):
        for ra, rb in zip(pa["phi"], pb["phi"], strict=True):
            worst = max(
                [worst] + [abs(x - y) for x, y in zip(ra, rb, strict=True) if x is not None]
            )
    return worst


def _max_rel_diff(results: dict[str, str]) -> float:
    """Largest |σ_a − σ_b| / σ_1 between two results' singular values (same modules)."""
    a, b = (json.loads(results[k])["modules"] for k in ("serial", "pool"))
    worst = 0.0
    for ra, rb in zip(a, b, strict=True):
        sa, sb = ra["singular_values"], rb["singular_values"]
        if sa and sa[0]:
            worst = max(worst, max(abs(x - y) for x, y in zip(sa, sb, strict=True)) / sa[0])
    return worst


def bench_randomized() -> None:
    from spectra.engine.randomized import DEFAULT_OVERSAMPLE, DEFAULT_POWER_ITERS, randomized_svd
    from spectra.io import open_tensors
    from spectra.loaders import open_checkpoint

    d = synthetic()
    k = 16
    header(f"randomized top-{k} (p={DEFAULT_OVERSAMPLE}, q={DEFAULT_POWER_ITERS}) vs exact svdvals")
    reader = open_checkpoint(d / "full", base=open_tensors(d / "base"))
    name = next(m.module for m in reader.modules() if "mlp.up_proj" in m.module)
    delta = reader.update(name).dense  # (intermediate, hidden)
    gen = torch.Generator().manual_seed(0)
    shape = tuple(delta.shape)
    m = min(shape)
    u, _ = torch.linalg.qr(torch.randn(shape[0], m, generator=gen))
    v, _ = torch.linalg.qr(torch.randn(shape[1], m, generator=gen))
    cases = {
        f"generated full-FT ΔW {shape}": delta,
        f"Gaussian {shape} (flat)": torch.randn(shape, generator=gen),
        f"σ_i = 0.9^i {shape}": (u * 0.9 ** torch.arange(m, dtype=torch.float32)) @ v.T,
    }
    print(f"{'matrix':<44} {'exact s':>8} {'rand s':>8} {'speed-up':>9} {'max rel err top-k':>18}")
    for label, a in cases.items():
        t_ex = best_time(lambda a=a: torch.linalg.svdvals(a), 1)
        t_rd = best_time(lambda a=a: randomized_svd(a, k), 2)
        exact = torch.linalg.svdvals(a.double())[:k]
        err = float(((randomized_svd(a, k)[0].double() - exact).abs() / exact).max())
        print(f"{label:<44} {t_ex:>8.2f} {t_rd:>8.3f} {t_ex / t_rd:>8.0f}x {err:>18.1e}")


def bench_weightwatcher() -> None:
    header("WeightWatcher 0.7 vs spectra, same inputs")
    if not ARGS.ww_python:
        print("skipped: pass --ww-python PATH (a python with weightwatcher==0.7.* installed)")
        return
    d = synthetic()
    out = ARGS.work / "spectra-vs-ww.json"
    print(f"{d.name}; wall: fresh process, imports included; call: the library call alone")
    print(f"{'input':<13} {'WW wall':>8} {'spectra':>8} {'ratio':>6} {'WW call':>8} {'spectra':>8} {'ratio':>6}"
          "   σ_1 spectra/WW: median (modules)")  # fmt: skip
    for label, ckpt, ww_mode in [
        ("LoRA adapter", d / "lora", "ww-lora"),
        ("full pair", d / "full", "ww-full"),
    ]:
        t0 = time.perf_counter()
        ww = measure(ww_mode, str(d / "base"), str(ckpt), python=ARGS.ww_python)
        ww_wall = time.perf_counter() - t0
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "spectra", "compare", str(d / "base"), str(ckpt),
               "--no-base-metrics", "-q", "--json", str(out)]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True)
        sp_wall = time.perf_counter() - t0
        sp = measure("analyze", str(d / "base"), str(ckpt), json.dumps({"against_base": False}))
        ours = {
            m["module"]: m["metrics"]["spectral_norm"]
            for m in json.loads(out.read_text())["modules"]
        }
        ratios = sorted(ours[k] / v for k, v in ww["sv_max"].items() if k in ours and v)
        med = ratios[len(ratios) // 2] if ratios else float("nan")
        print(f"{label:<13} {ww_wall:>8.1f} {sp_wall:>8.1f} {ww_wall / sp_wall:>5.1f}x "
              f"{ww['seconds']:>8.2f} {sp['seconds']:>8.2f} {ww['seconds'] / sp['seconds']:>5.1f}x"
              f"   {med:.4f} ({len(ratios)})")  # fmt: skip
    print(
        "(spectra: compare --no-base-metrics; WW: analyze() with its defaults: ESD + power-law fit)"
    )


def _ww_child(mode: str, args: list[str]) -> None:
    """WeightWatcher on the same files (runs under --ww-python)."""
    import logging

    import weightwatcher as ww

    logging.disable(logging.WARNING)
    t0 = time.perf_counter()
    if mode == "ww-lora":  # args: base adapter (WW reads the adapter alone)
        df = ww.WeightWatcher().analyze(model=args[1], peft=True)
    else:  # args: base tuned
        df = ww.WeightWatcher().analyze(model=args[1], base_model=args[0])
    seconds = time.perf_counter() - t0
    sv_max = {}
    for name, value in zip(df["name"], df["sv_max"], strict=True):
        module = re.sub(r"^base_model\.model\.|\.lora_BA$", "", str(name))
        sv_max[module] = float(value)
    print(json.dumps({"seconds": seconds, "sv_max": sv_max}))


def bench_big() -> None:
    if ARGS.big is None:
        header("big: skipped (pass --big DIR made by make_synthetic.py --scale 7b)")
        return
    d = ARGS.big
    gb = sum(f.stat().st_size for f in d.glob("*/*.safetensors")) / 1e9
    header(f"big: {d} ({gb:.1f} GB of safetensors)")
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "spectra", "compare", str(d / "base"), str(d / "lora"),
           "--no-base-metrics", "-q", "--json", str(ARGS.work / "lora7b.json")]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)
    n = len(json.loads((ARGS.work / "lora7b.json").read_text())["modules"])
    print(
        f"LoRA adapter, {n} modules: compare (fresh process, end to end) {time.perf_counter() - t0:.1f} s"
    )
    st = measure("stream", str(d / "base"), str(d / "full"))
    print(
        f"stream every ΔW of the pair ({st['modules']:.0f} modules): {st['seconds']:.0f} s, "
        f"peak RSS {st['peak_mb']:.0f} MB (baseline {st['baseline_mb']:.0f} MB)"
    )
    regex = rf"layers\.({ARGS.big_layers})\.|embed_tokens|lm_head"
    for label, opts in [
        (f"exact, --modules '{regex}'", {"modules": regex, "against_base": False}),
        ("randomized top-16, every module", {"svd": "randomized", "against_base": False}),
    ]:
        an = measure("analyze", str(d / "base"), str(d / "full"), json.dumps(opts))
        print(
            f"analyze {label}: {an['modules']:.0f} modules, {an['seconds']:.0f} s, "
            f"peak RSS {an['peak_mb']:.0f} MB (baseline {an['baseline_mb']:.0f} MB)"
        )


def main() -> None:
    if ARGS.child:
        mode, rest = ARGS.child[0], ARGS.child[1:]
        (_ww_child if mode.startswith("ww-") else _child_main)(mode, rest)
        return
    ARGS.work.mkdir(parents=True, exist_ok=True)
    print(f"torch {torch.__version__}, python {sys.version.split()[0]}, threads {ARGS.threads}")
    chosen = ARGS.sections or [s for s in SECTIONS if s != "big"]
    for section in chosen:
        if section not in SECTIONS:
            raise SystemExit(f"unknown section {section!r}: pick from {', '.join(SECTIONS)}")
        globals()[f"bench_{section}"]()


if __name__ == "__main__":
    main()
