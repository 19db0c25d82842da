"""What the default ``spectra compare BASE ADAPTER`` costs, against the obvious way; and what
``--intruders`` costs against its bare LAPACK work. Ratios measured in one run on one input.

Sections:

* ``default``: ``spectra compare BASE LORA`` (the real CLI entry point, in-process, default
  options: base metrics on, intruder dimensions by the default rule) on a PEFT LoRA of
  ``--modules`` (8) modules of ``--n`` × ``--n`` (4096²), r = ``--r`` (16), base in bf16 as
  Hugging Face saves it ÷ ``torch.linalg.svdvals`` of the same ΔW = s·B·A, already formed in
  float32 in memory (the obvious way, not counting forming them). Target ≤ 0.05×, must be
  ≤ 0.2×.
* ``intruders``: ``compare --intruders --no-cache`` minus ``compare --no-intruders`` on the
  same files (what intruder dimensions add) ÷ their bare LAPACK work: ``torch.linalg.svd`` of W0
  and of W0 + ΔW (thin, float32, in memory) per module; then the same with the cache filled
  by a first run (``--intruders``, cache on, second run). Sizes ``--intruder-n`` and
  ``--intruder-modules`` (smaller than the default section's: at 4096² the bare SVDs alone
  take minutes per module on a small CPU). Also prints the measured seconds per N·n² next to
  the constant the default rule estimates with (spectra.engine.intruder_policy).

Inputs are generated under ``--work`` on first use (make_synthetic.py's writer; W0 ~
N(0, 0.02²), A ~ N(0, 1/in), B ~ N(0, 0.01²), α = 2r). Thread count (default 2) is set for
torch, MKL, OpenBLAS and OpenMP before they are imported.

Run: ``python tests/benchmarks/bench_default.py [SECTION ...] [--threads 2] [--work DIR]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import tempfile
import time
from pathlib import Path

from _bench import best_time, pin_threads  # this folder (scripts run from here)

SECTIONS = ("default", "intruders")


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sections", nargs="*", help=f"any of {', '.join(SECTIONS)} (default: all)")
    p.add_argument("--threads", type=int, default=2, help="BLAS/LAPACK/torch threads (default 2)")
    p.add_argument("--work", type=Path, default=Path("/tmp/spectra-bench-default"))
    p.add_argument("--n", type=int, default=4096, help="side of every weight (default 4096)")
    p.add_argument("--modules", type=int, default=8, help="adapted modules (default 8)")
    p.add_argument("--r", type=int, default=16, help="LoRA rank (default 16)")
    p.add_argument("--intruder-n", type=int, default=1024)
    p.add_argument("--intruder-modules", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2, help="best of this many timings")
    p.add_argument(
        "--dense-sample",
        type=int,
        help="time svdvals on this many of the (equal-shaped) ΔW and scale to all (default: all)",
    )
    return p.parse_args()


ARGS = _parse()
pin_threads(ARGS.threads)

import torch  # noqa: E402
from make_synthetic import INIT_STD, SafetensorsWriter  # noqa: E402

torch.set_num_threads(ARGS.threads)


def _names(modules: int) -> list[str]:
    return [f"model.layers.{i}.self_attn.q_proj" for i in range(modules)]


def make_set(root: Path, n: int, modules: int, r: int) -> tuple[Path, Path]:
    """``root/base.safetensors`` (bf16) and ``root/lora/`` (a PEFT adapter, float32)."""
    base, lora = root / "base.safetensors", root / "lora"
    if base.is_file() and (lora / "adapter_model.safetensors").is_file():
        return base, lora
    root.mkdir(parents=True, exist_ok=True)
    lora.mkdir(exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    names = _names(modules)
    writer = SafetensorsWriter(base, [(m + ".weight", (n, n)) for m in names], torch.bfloat16)
    for m in names:
        writer.write(m + ".weight", torch.randn(n, n, generator=gen) * INIT_STD)
    writer.close()
    keys = [(f"base_model.model.{m}.lora_{x}.weight", s) for m in names
            for x, s in (("A", (r, n)), ("B", (n, r)))]  # fmt: skip
    writer = SafetensorsWriter(lora / "adapter_model.safetensors", keys, torch.float32)
    for key, shape in keys:
        scale = 1 / math.sqrt(n) if ".lora_A." in key else 0.01
        writer.write(key, torch.randn(shape, generator=gen) * scale)
    writer.close()
    config = {"peft_type": "LORA", "r": r, "lora_alpha": 2 * r, "target_modules": ["q_proj"],
              "fan_in_fan_out": False, "use_rslora": False, "use_dora": False}  # fmt: skip
    (lora / "adapter_config.json").write_text(json.dumps(config))
    return base, lora


def _pairs(base: Path, lora: Path, modules: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(W0 float32, ΔW = s·B·A float32) per module, in memory."""
    from safetensors.torch import load_file

    w, ab = load_file(str(base)), load_file(str(lora / "adapter_model.safetensors"))
    s = json.loads((lora / "adapter_config.json").read_text())
    scale = s["lora_alpha"] / s["r"]
    out = []
    for m in _names(modules):
        k = f"base_model.model.{m}"
        out.append(
            (w[m + ".weight"].float(), scale * ab[k + ".lora_B.weight"] @ ab[k + ".lora_A.weight"])
        )
    return out


def cli(*args: object) -> None:
    """The real entry point, in-process (as ``spectra ...``); raises on a non-zero exit."""
    from spectra_cli.app import main

    try:
        main([str(a) for a in args])
    except SystemExit as e:
        if e.code:
            raise RuntimeError(f"spectra {' '.join(map(str, args))} exited {e.code}") from e


def _compare(base: Path, lora: Path, *extra: str) -> None:
    """``spectra compare BASE LORA -q --json FILE ...``, its table sent to /dev/null."""
    out = Path(tempfile.mkdtemp()) / "r.json"
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        cli("compare", base, lora, "-q", "--threads", ARGS.threads, "--json", out, *extra)


def section_default() -> None:
    n, m, r = ARGS.n, ARGS.modules, ARGS.r
    base, lora = make_set(ARGS.work / f"n{n}-m{m}-r{r}", n, m, r)
    _compare(base, lora)  # warm-up: imports, page cache
    t_default = best_time(lambda: _compare(base, lora), ARGS.repeats)
    deltas = [d for _, d in _pairs(base, lora, m)]
    k = min(ARGS.dense_sample or m, m)
    t_dense = best_time(lambda: [torch.linalg.svdvals(d) for d in deltas[:k]], 1) * m / k
    ratio = t_default / t_dense
    verdict = "target met" if ratio <= 0.05 else ("within limit" if ratio <= 0.2 else "TOO SLOW")
    print(f"[default] {m} modules of {n}×{n}, r = {r}, {ARGS.threads} threads")
    print(f"  spectra compare BASE LORA (default)     {t_default:8.2f} s")
    sampled = f" ({k} timed, × {m / k:g})" if k < m else ""
    print(f"  torch.linalg.svdvals of the {m} ΔW       {t_dense:8.2f} s{sampled}")
    print(f"  ratio {ratio:.4f}x (target ≤ 0.05x, must be ≤ 0.2x): {verdict}", flush=True)


def section_intruders() -> None:
    from spectra.engine.intruder_policy import INTRUDER_SECONDS_PER_UNIT

    n, m, r = ARGS.intruder_n, ARGS.intruder_modules, ARGS.r
    base, lora = make_set(ARGS.work / f"n{n}-m{m}-r{r}", n, m, r)
    _compare(base, lora, "--no-intruders")  # warm-up
    t_default = best_time(lambda: _compare(base, lora, "--no-intruders"), ARGS.repeats)
    t_intr = best_time(lambda: _compare(base, lora, "--intruders", "--no-cache"), 1)
    pairs = _pairs(base, lora, m)

    def bare() -> None:
        for w0, d in pairs:
            torch.linalg.svd(w0, full_matrices=False)
            torch.linalg.svd(w0 + d, full_matrices=False)

    t_bare = best_time(bare, 1)
    os.environ["SPECTRA_CACHE_DIR"] = tempfile.mkdtemp(prefix="spectra-bench-cache-")
    _compare(base, lora, "--intruders")  # fills the cache
    t_cached = best_time(lambda: _compare(base, lora, "--intruders"), ARGS.repeats)
    added, added_cached = t_intr - t_default, t_cached - t_default
    unit = m * n**3
    print(f"[intruders] {m} modules of {n}×{n}, r = {r}, {ARGS.threads} threads")
    print(f"  compare --no-intruders                  {t_default:8.2f} s")
    print(f"  compare --intruders --no-cache          {t_intr:8.2f} s (adds {added:.2f} s)")
    print(f"  bare LAPACK svd(W0) + svd(W0 + ΔW)      {t_bare:8.2f} s")
    print(f"  ratio added / bare {added / t_bare:.3f}x")
    print(f"  compare --intruders, cache filled       {t_cached:8.2f} s (adds {added_cached:.2f} s,"
          f" {added_cached / t_bare:.3f}x bare)")  # fmt: skip
    print(
        f"  measured s per N·n²: {added / unit:.3g} (the default rule estimates with "
        f"{INTRUDER_SECONDS_PER_UNIT:.3g})",
        flush=True,
    )


def main() -> None:
    chosen = ARGS.sections or list(SECTIONS)
    bad = [s for s in chosen if s not in SECTIONS]
    if bad:
        raise SystemExit(f"unknown section {bad[0]!r}: choose from {', '.join(SECTIONS)}")
    t0 = time.perf_counter()
    for name in chosen:
        globals()[f"section_{name}"]()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"(total {time.perf_counter() - t0:.0f} s; 1-min load average at the end {load:.1f} "
          f"on {os.cpu_count()} cores)")  # fmt: skip


if __name__ == "__main__":
    main()
