"""``spectra extract`` against mergekit's ``mergekit-extract-lora`` on the same full fine-tune
pair at the same rank: wall time (whole command, start-up included, best of two) and the
reconstruction error of the modules both write as LoRA, against the optimum (Eckart–Young).

The pair: a Llama-architecture model built from a config (no download), saved by
transformers in float32, and a "fine-tune" of it: every matrix + a rank-16 signal + dense
noise (a decaying spectrum with a full-rank tail, as full fine-tunes have).

mergekit is never a spectra dependency: install it in its own environment and pass its
executable, e.g. ``python -m venv /work/venvs/mergekit && /work/venvs/mergekit/bin/pip
install mergekit``, then::

    python tests/benchmarks/bench_extract.py --mergekit /work/venvs/mergekit/bin/mergekit-extract-lora

Errors are measured with spectra's loader on each adapter directory (ΔW as PEFT merges it,
tested against PEFT's merge_and_unload in tests/loaders) against W_tuned − W_base in float64.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _bench import pin_threads

# --threads N (default 1) must be known before torch is imported: read it from argv here
THREADS = int(sys.argv[sys.argv.index("--threads") + 1]) if "--threads" in sys.argv else 1
pin_threads(THREADS)

import torch  # noqa: E402

from spectra.io import open_tensors  # noqa: E402
from spectra.loaders import open_checkpoint  # noqa: E402


def make_pair(root: Path, hidden: int, layers: int, rank: int) -> tuple[Path, Path]:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=4096, hidden_size=hidden, intermediate_size=int(2.75 * hidden),
        num_hidden_layers=layers, num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64, tie_word_embeddings=False,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    model.save_pretrained(root / "base")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.ndim == 2 and p.shape[0] != config.vocab_size:
                out, inp = p.shape
                signal = torch.randn(out, rank, generator=g) @ torch.randn(rank, inp, generator=g)
                p.add_(0.002 * signal + 0.002 * torch.randn(out, inp, generator=g))
    model.save_pretrained(root / "tuned")
    return root / "base", root / "tuned"


def run(cmd: list[str]) -> float:
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - t0)
    return best


def errors(adapter: Path, base: Path, tuned: Path, rank: int) -> dict[str, tuple[float, float]]:
    """Module → (relative error of the adapter's ΔW, optimal relative error at ``rank``)."""
    base_src, tuned_src = open_tensors(base), open_tensors(tuned)
    reader = open_checkpoint(adapter, base=base_src)
    out = {}
    for info in reader.modules():
        if info.rank is None:  # saved whole: not a truncation
            continue
        key = f"{info.module}.weight"
        truth = tuned_src.get(key).double() - base_src.get(key).double()
        got = reader.update(info.module).materialize().double()
        s = torch.linalg.svdvals(truth)
        optimum = float((s[rank:] ** 2).sum() / (s**2).sum()) ** 0.5
        out[info.module] = (float((got - truth).norm() / truth.norm()), optimum)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mergekit", default="/work/venvs/mergekit/bin/mergekit-extract-lora")
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads, both tools")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench_extract."))
    try:
        base, tuned = make_pair(root, args.hidden, args.layers, rank=16)
        spectra_cmd = [sys.executable, "-m", "spectra", "extract", str(base), str(tuned),
                       "--rank", str(args.rank), "--out", str(root / "spectra"), "-q"]  # fmt: skip
        mk_cmd = [args.mergekit, "--model", str(tuned), "--base-model", str(base), "--out-path",
                  str(root / "mergekit"), "--max-rank", str(args.rank), "--quiet"]  # fmt: skip
        print(f"threads: {THREADS}; hidden {args.hidden}, {args.layers} layers, rank {args.rank}")
        t_spectra = run(spectra_cmd)
        t_mk = run(mk_cmd) if Path(args.mergekit).exists() else float("nan")
        e_spectra = errors(root / "spectra", base, tuned, args.rank)
        rows = [("spectra extract", t_spectra, e_spectra)]
        if Path(args.mergekit).exists():
            rows.append(
                ("mergekit-extract-lora", t_mk, errors(root / "mergekit", base, tuned, args.rank))
            )
        else:
            print(f"mergekit not found at {args.mergekit}: spectra only")
        shared = set.intersection(*(set(e) for _, _, e in rows))
        for name, t, e in rows:
            worst = max(e[m][0] - e[m][1] for m in shared)
            mean = sum(e[m][0] for m in shared) / len(shared)
            print(f"{name:24s} wall {t:7.2f} s  mean rel. error {mean:.6f}  "
                  f"max excess over optimum {worst:.2e}  ({len(shared)} shared LoRA modules)")  # fmt: skip
        if len(rows) == 2:
            print(f"speed-up (mergekit / spectra wall time): {t_mk / t_spectra:.2f}x")
        size = {n: sum(f.stat().st_size for f in (root / d).glob("*.safetensors"))
                for n, d in (("spectra", "spectra"), ("mergekit", "mergekit")) if (root / d).exists()}  # fmt: skip
        print("adapter file sizes (bytes):", size)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
