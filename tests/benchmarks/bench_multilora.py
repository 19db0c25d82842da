"""Benchmark: is the batched MultiLoRA layer as fast as a LoRA of the same total rank?

Run: ``python tests/benchmarks/bench_multilora.py --threads 2`` (not collected by pytest).

One ``width × width`` linear layer, input (batch, seq, width), all in one process on the same
input, measured interleaved (each repeat runs every variant once, so drift in a shared machine
hits all of them alike), median of the repeats after warmup:

* training step = forward + backward (gradient reaching the input too, as for a layer inside a
  network) + AdamW step on the adapter parameters, for
  - ``multilora``: spectra's MultiLoRALinear, n modules of rank r, one batched product;
  - ``lora``: a minimal LoRA of rank n·r (the same two matrix products, no scaling vectors);
  - ``peft_lora``: PEFT's LoRA of rank n·r, for reference (skipped if peft is missing);
  - ``loop``: the obvious MultiLoRA, a Python loop over the n modules (the baseline);
* merged inference = forward under no_grad of a merged MultiLoRALinear vs a plain nn.Linear
  holding the same weight.

Targets: multilora / lora ≤ 1.15, merged / linear ≤ 1.02.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from spectra.multilora import MultiLoRAConfig, MultiLoRALinear

Step = Callable[[], None]


class _LoRA(nn.Module):
    """y = W0 x + b + (α / R) B A dropout(x), the shape of loralib's / PEFT's layer."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base_layer = base.requires_grad_(False)
        self.lora_A = nn.Parameter(torch.randn(rank, base.in_features) / base.in_features**0.5)
        self.lora_B = nn.Parameter(torch.randn(base.out_features, rank) * 0.01)
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x) + (x @ self.lora_A.T) @ self.lora_B.T * self.scale


class _LoopMultiLoRA(nn.Module):
    """The obvious MultiLoRA: Σ_i (α/r) s_i ⊙ B_i A_i x computed one module at a time."""

    def __init__(self, layer: MultiLoRALinear) -> None:
        super().__init__()
        self.inner = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.inner
        y = m.base_layer(x)  # (..., out)
        for i in range(m.config.n):
            h = x @ m.multilora_A[i].T  # (..., r)
            y = y + m.config.scale * m.multilora_scaling[i] * (h @ m.multilora_B[i].T)
        return y


def _train_step(model: nn.Module, x: torch.Tensor) -> Step:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)

    def step() -> None:
        y = model(x)  # (batch, seq, out)
        y.square().mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        x.grad = None

    return step


def _infer_step(model: nn.Module, x: torch.Tensor) -> Step:
    def step() -> None:
        with torch.no_grad():
            model(x)

    return step


def _measure(steps: dict[str, Step], warmup: int, repeats: int, device: str) -> dict[str, float]:
    """Median seconds per call of each step, the steps interleaved within each repeat."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(warmup):
        for step in steps.values():
            step()
    sync()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            sync()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def _peft_lora(base: nn.Linear, rank: int, alpha: float) -> nn.Module | None:
    try:
        import peft
    except ImportError:
        return None
    wrapper = nn.Sequential()
    wrapper.add_module("proj", copy.deepcopy(base))
    config = peft.LoraConfig(r=rank, lora_alpha=alpha, target_modules=["proj"])
    model = peft.get_peft_model(wrapper, config)
    with torch.no_grad():  # nonzero B, like the others (PEFT starts B at 0)
        model.base_model.model.proj.lora_B["default"].weight.normal_(std=0.01)
    return model


def _training_variants(base: nn.Linear, args: argparse.Namespace) -> dict[str, nn.Module]:
    config = MultiLoRAConfig(r=args.r, n=args.n, lora_alpha=2.0 * args.r)
    multi = MultiLoRALinear(copy.deepcopy(base), config)
    with torch.no_grad():
        multi.multilora_scaling.normal_()
    variants: dict[str, nn.Module] = {
        "multilora": multi,
        "lora": _LoRA(copy.deepcopy(base), args.n * args.r, 2.0 * args.n * args.r),
        "loop": _LoopMultiLoRA(copy.deepcopy(multi)),
    }
    peft_model = _peft_lora(base, args.n * args.r, 2.0 * args.n * args.r)
    if peft_model is not None:
        variants["peft_lora"] = peft_model
    return variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--r", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = args.device
    print(
        f"threads={torch.get_num_threads()} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')})"
        f" device={device} torch={torch.__version__} input=({args.batch}, {args.seq}, "
        f"{args.width}) float32, n={args.n} r={args.r} (LoRA rank {args.n * args.r}), "
        f"warmup={args.warmup} median of {args.repeats}"
    )
    base = nn.Linear(args.width, args.width).to(device)
    x = torch.randn(args.batch, args.seq, args.width, device=device, requires_grad=True)

    models = {k: m.to(device) for k, m in _training_variants(base, args).items()}
    train = _measure(
        {k: _train_step(m, x) for k, m in models.items()}, args.warmup, args.repeats, device
    )
    print("\ntraining step (forward + backward + AdamW), median ms:")
    for name, t in train.items():
        print(f"  {name:10s} {1e3 * t:9.2f}   / lora = {t / train['lora']:.3f}")
    print(f"  multilora / lora = {train['multilora'] / train['lora']:.3f} (target <= 1.15)")
    print(f"  loop / multilora = {train['loop'] / train['multilora']:.3f} (speed-up over loop)")

    merged = models["multilora"]
    merged.merge()
    plain = nn.Linear(args.width, args.width).to(device)
    with torch.no_grad():
        plain.weight.copy_(merged.base_layer.weight)
        plain.bias.copy_(merged.base_layer.bias)
    x_eval = x.detach()
    infer = _measure(
        {"linear": _infer_step(plain, x_eval), "merged": _infer_step(merged, x_eval)},
        args.warmup,
        3 * args.repeats,
        device,
    )
    print("\nmerged inference (no_grad forward), median ms:")
    for name, t in infer.items():
        print(f"  {name:10s} {1e3 * t:9.2f}")
    print(f"  merged / linear = {infer['merged'] / infer['linear']:.3f} (target <= 1.02)")


if __name__ == "__main__":
    main()
