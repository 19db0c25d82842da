"""Pieces of the training loop with closed-form answers (no model needed)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from spectra.recipe.config import RecipeConfig
from spectra.recipe.model import mean_pool
from spectra.recipe.train import batch_schedule, collate, make_optimizer


def test_collate_right_pads_and_masks() -> None:
    ids, mask = collate([(101, 7, 102), (101, 102)], pad_id=0)
    assert ids.tolist() == [[101, 7, 102], [101, 102, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]]


def test_mean_pool_ignores_padding() -> None:
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])  # (1, 3, 2)
    mask = torch.tensor([[1, 1, 0]])
    torch.testing.assert_close(mean_pool(hidden, mask), torch.tensor([[2.0, 3.0]]))


def test_batch_schedule_walks_whole_epochs_per_task() -> None:
    plan = batch_schedule({"a": 6, "b": 4}, steps=6, batch_per_task=2, seed=0)
    assert len(plan) == 6 and all(set(p) == {"a", "b"} for p in plan)
    a = np.array([p["a"] for p in plan]).ravel()  # 12 draws = 2 epochs of 6
    b = np.array([p["b"] for p in plan]).ravel()  # 12 draws = 3 epochs of 4
    for epoch in a.reshape(2, 6):
        assert sorted(epoch) == list(range(6))
    for epoch in b.reshape(3, 4):
        assert sorted(epoch) == list(range(4))
    assert plan == batch_schedule({"a": 6, "b": 4}, steps=6, batch_per_task=2, seed=0)
    assert plan != batch_schedule({"a": 6, "b": 4}, steps=6, batch_per_task=2, seed=1)


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(2, 2)
        self.heads = nn.ModuleDict({"t": nn.Linear(2, 2)})


def test_schedule_warms_up_linearly_then_decays_to_zero() -> None:
    config = RecipeConfig(steps=10, warmup_frac=0.2, lr_head=1.0)
    optimizer, scheduler = make_optimizer(_Tiny(), 0.5, config)
    encoder_lr, head_lr = [], []
    for _ in range(10):
        encoder_lr.append(optimizer.param_groups[0]["lr"])
        head_lr.append(optimizer.param_groups[1]["lr"])
        optimizer.step()
        scheduler.step()
    # warm-up over 2 steps: 1/2, 2/2; then (10 - s) / 8 for s = 2..9
    expected = [0.5, 1.0] + [(10 - s) / 8 for s in range(2, 10)]
    np.testing.assert_allclose(head_lr, expected, rtol=1e-12)
    np.testing.assert_allclose(encoder_lr, 0.5 * np.array(expected), rtol=1e-12)
    assert optimizer.param_groups[0]["weight_decay"] == 0.0
