"""Tiny real Hugging Face models for the tests (built offline from a config, never downloaded)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Linears(nn.Module):
    """Named ``nn.Linear`` layers, built in the order given (so one seed fixes all their initial
    weights), e.g. ``Linears(up=(12, 20), down=(20, 12))`` for (in, out) sizes; ``forward`` runs
    them in that order with a ReLU between two layers."""

    def __init__(self, **layers: tuple[int, int]) -> None:
        super().__init__()
        for name, (fan_in, fan_out) in layers.items():
            self.add_module(name, nn.Linear(fan_in, fan_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *hidden, last = self.children()
        for layer in hidden:
            x = torch.relu(layer(x))
        return last(x)


def tiny_bert_config(
    *,
    vocab: int = 50,
    hidden: int = 16,
    layers: int = 2,
    intermediate: int = 32,
    positions: int = 16,
    heads: int = 2,
) -> Any:
    """A ``transformers.BertConfig`` small enough that every test can build and save it."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=positions,
    )


def tiny_bert(*, pooling: bool = True, **sizes: int) -> nn.Module:
    """A freshly initialised ``transformers.BertModel`` of :func:`tiny_bert_config` sizes."""
    from transformers import BertModel

    return BertModel(tiny_bert_config(**sizes), add_pooling_layer=pooling)
