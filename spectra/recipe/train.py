"""The training loop the three methods share: same batches, same schedule, same loss.

Every step draws ``batch_per_task`` examples of every task (all tasks in each batch), encodes
them in one forward pass, applies each task's head to its rows, and minimises the mean over
tasks of the per-task cross-entropy, so every task weighs the same whatever its label count.
Only the set of trainable encoder parameters and their learning rate differ between methods.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from spectra.recipe.config import RecipeConfig
from spectra.recipe.data import TaskData
from spectra.recipe.model import MultiTaskModel

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Encoded:
    """One split of one task, tokenized (no padding yet).

    Attributes:
        ids: Token ids per example, [CLS] … [SEP], at most ``max_length`` long.
        labels: (N,) int64 class indices.
    """

    ids: tuple[tuple[int, ...], ...]
    labels: torch.Tensor


@dataclass(frozen=True)
class TrainStats:
    """What one method's training recorded.

    Attributes:
        loss: Mean-over-tasks cross-entropy at every step, (steps,).
        task_loss: Per task, its cross-entropy at every step.
        wall_s: Seconds spent in the loop (forward, backward, optimizer).
        cpu_s: CPU seconds of this process in the loop, all threads (on a shared machine
            ``cpu_s / threads`` estimates the wall time the loop would take alone).
    """

    loss: list[float]
    task_loss: dict[str, list[float]]
    wall_s: float
    cpu_s: float


def encode_tasks(
    tokenizer: object, tasks: Sequence[TaskData], max_length: int
) -> tuple[dict[str, Encoded], dict[str, Encoded]]:
    """Tokenize every task's train and test texts once.

    Returns:
        (train, test): task name → :class:`Encoded`.
    """
    train, test = {}, {}
    for task in tasks:
        train[task.name] = _encode(tokenizer, task.train_texts, task.train_labels, max_length)
        test[task.name] = _encode(tokenizer, task.test_texts, task.test_labels, max_length)
    return train, test


def _encode(
    tokenizer: object, texts: Sequence[str], labels: Sequence[int], max_length: int
) -> Encoded:
    ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]  # type: ignore[operator]
    return Encoded(tuple(tuple(x) for x in ids), torch.tensor(labels, dtype=torch.int64))


def collate(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists to the longest one.

    Returns:
        input_ids: (B, T) int64; attention_mask: (B, T) int64, 1 on real tokens.
    """
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.int64)  # (B, T)
    mask = torch.zeros((len(seqs), width), dtype=torch.int64)  # (B, T)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.int64)
        mask[i, : len(s)] = 1
    return ids, mask


def batch_schedule(
    sizes: dict[str, int], steps: int, batch_per_task: int, seed: int
) -> list[dict[str, list[int]]]:
    """Which training examples each step uses: the same list for every method.

    Each task walks through seeded random permutations of its examples, epoch after epoch,
    taking ``batch_per_task`` indices per step (a small task such as iris repeats sooner).

    Returns:
        One dict per step: task name → example indices.
    """
    plan: list[dict[str, list[int]]] = [{} for _ in range(steps)]
    for t, (name, n) in enumerate(sizes.items()):
        rng = np.random.default_rng([seed, 100 + t])
        need = steps * batch_per_task
        epochs = [rng.permutation(n) for _ in range(-(-need // n))]
        stream = np.concatenate(epochs)[:need].reshape(steps, batch_per_task)
        for step in range(steps):
            plan[step][name] = stream[step].tolist()
    return plan


def make_optimizer(
    model: MultiTaskModel, encoder_lr: float, config: RecipeConfig
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (no weight decay: ΔW then holds only what the gradients asked for) with linear
    warm-up over ``warmup_frac`` of the steps and linear decay to 0.

    Two groups: the trainable encoder parameters at ``encoder_lr``, the heads at ``lr_head``.
    """
    encoder_params = [p for p in model.encoder.parameters() if p.requires_grad]
    groups = [
        {"params": encoder_params, "lr": encoder_lr},
        {"params": list(model.heads.parameters()), "lr": config.lr_head},
    ]
    try:  # the fused kernel: ~4x faster steps over full fine-tuning's 22.6 M parameters
        optimizer = torch.optim.AdamW(groups, weight_decay=0.0, fused=True)
    except RuntimeError:  # torch < 2.4 has no fused AdamW on CPU
        optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
    warmup = max(1, round(config.warmup_frac * config.steps))

    def factor(step: int) -> float:  # multiplies each group's lr at this step
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (config.steps - step) / max(1, config.steps - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train(
    model: MultiTaskModel,
    encoder_lr: float,
    data: dict[str, Encoded],
    schedule: list[dict[str, list[int]]],
    config: RecipeConfig,
    *,
    pad_id: int,
    device: torch.device,
    label: str,
    progress: Progress | None = None,
    after_step: Callable[[int], None] | None = None,
) -> TrainStats:
    """Train ``model`` (its trainable parameters, and the heads) along ``schedule``.

    Args:
        model: Prepared for one method (which encoder parameters require grad).
        encoder_lr: Learning rate of the trainable encoder parameters.
        data: Task name → tokenized training split.
        schedule: From :func:`batch_schedule`; its length is the number of steps.
        config: Learning rates of the heads, warm-up, clipping.
        pad_id: The tokenizer's padding id.
        device: Where the model is.
        label: Method name, for progress messages.
        progress: Called with a line about every tenth of the steps.
        after_step: Called with the number of steps done after every optimizer step (the
            recipe saves its intermediate checkpoints here); it must not touch the model.
    """
    optimizer, scheduler = make_optimizer(model, encoder_lr, config)
    trainable = [p for p in model.parameters() if p.requires_grad]
    loss_curve: list[float] = []
    task_curves: dict[str, list[float]] = {name: [] for name in data}
    every = max(1, len(schedule) // 10)
    model.train()
    start, cpu_start = time.perf_counter(), time.process_time()
    for step, picks in enumerate(schedule):
        losses = _step_losses(model, data, picks, pad_id, device)
        loss = torch.stack(list(losses.values())).mean()  # equal weight per task
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        if after_step is not None:
            after_step(step + 1)
        loss_curve.append(loss.item())
        for name, value in losses.items():
            task_curves[name].append(value.item())
        if progress is not None and ((step + 1) % every == 0 or step + 1 == len(schedule)):
            progress(f"{label}: step {step + 1}/{len(schedule)}, loss {loss_curve[-1]:.4f}")
    model.eval()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return TrainStats(loss_curve, task_curves, wall, cpu)


def _step_losses(
    model: MultiTaskModel,
    data: dict[str, Encoded],
    picks: dict[str, list[int]],
    pad_id: int,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """One forward pass over every task's examples of this step; per-task cross-entropy."""
    seqs: list[tuple[int, ...]] = []
    rows: dict[str, slice] = {}
    for name, idx in picks.items():
        rows[name] = slice(len(seqs), len(seqs) + len(idx))
        seqs += [data[name].ids[i] for i in idx]
    ids, mask = collate(seqs, pad_id)  # (B, T), B = tasks · batch_per_task
    pooled = model.encode(ids.to(device), mask.to(device))  # (B, H)
    return {
        name: nn.functional.cross_entropy(
            model.heads[name](pooled[rows[name]]),  # (b, n_labels)
            data[name].labels[picks[name]].to(device),  # (b,)
        )
        for name in picks
    }
