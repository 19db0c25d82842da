"""Held-out accuracy, and the "before" baseline: a linear probe on the frozen base encoder.

Why a probe as "before": a freshly initialised head on the base encoder scores chance, which
says nothing about the encoder. The probe is the best a linear head (the same head every
method trains) does on the unchanged pretrained features, so "after − before" is what
changing the encoder added on top of what the pretrained features already held. Chance (the
majority-class share of each test split) is logged beside it.
"""

from __future__ import annotations

import torch
from torch import nn

from spectra.recipe.model import MultiTaskModel
from spectra.recipe.train import Encoded, collate

_PROBE_LR = 1e-2  # full-batch Adam on 384-d features converges in a few hundred steps


@torch.no_grad()
def pooled_features(
    model: MultiTaskModel, data: Encoded, *, pad_id: int, batch_size: int, device: torch.device
) -> torch.Tensor:
    """Mean-pooled embeddings of every example, in eval mode (no dropout).

    Returns:
        (N, H) float32 on ``device``.
    """
    model.eval()
    chunks = []
    for start in range(0, len(data.ids), batch_size):
        ids, mask = collate(data.ids[start : start + batch_size], pad_id)  # (b, T)
        chunks.append(model.encode(ids.to(device), mask.to(device)))  # (b, H)
    return torch.cat(chunks)


def accuracy(
    model: MultiTaskModel,
    test: dict[str, Encoded],
    *,
    pad_id: int,
    batch_size: int,
    device: torch.device,
) -> dict[str, float]:
    """Per task, the share of held-out examples whose argmax logit is the true label."""
    result = {}
    for name, data in test.items():
        feats = pooled_features(model, data, pad_id=pad_id, batch_size=batch_size, device=device)
        with torch.no_grad():
            pred = model.heads[name](feats).argmax(dim=-1).cpu()  # (N,)
        result[name] = float((pred == data.labels).to(torch.float64).mean())
    return result


def probe_accuracy(
    model: MultiTaskModel,
    train: dict[str, Encoded],
    test: dict[str, Encoded],
    *,
    steps: int,
    pad_id: int,
    batch_size: int,
    device: torch.device,
) -> dict[str, float]:
    """Train each head alone on frozen features of ``model.encoder``; held-out accuracy.

    The heads of ``model`` are trained in place (full-batch Adam, lr 1e-2, ``steps`` steps,
    cross-entropy); the encoder is only run forward, in eval mode.
    """
    kw = {"pad_id": pad_id, "batch_size": batch_size, "device": device}
    result = {}
    for name in train:
        x_train = pooled_features(model, train[name], **kw)  # (N, H)
        x_test = pooled_features(model, test[name], **kw)  # (M, H)
        head = model.heads[name]
        _fit_head(head, x_train, train[name].labels.to(device), steps)
        with torch.no_grad():
            pred = head(x_test).argmax(dim=-1).cpu()  # (M,)
        result[name] = float((pred == test[name].labels).to(torch.float64).mean())
    return result


def _fit_head(head: nn.Linear, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    optimizer = torch.optim.Adam(head.parameters(), lr=_PROBE_LR)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(head(x), y).backward()
        optimizer.step()
