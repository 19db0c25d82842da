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


# BertConfig's own field names: the sizes a test may override
TINY_BERT = {
    "vocab_size": 50,
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "max_position_embeddings": 16,
}


def tiny_bert_config(**sizes: int) -> Any:
    """A ``transformers.BertConfig`` small enough that every test can build and save it: the
    :data:`TINY_BERT` sizes, ``sizes`` (same field names) overriding them."""
    from transformers import BertConfig

    unknown = sorted(sizes.keys() - TINY_BERT.keys())
    if unknown:  # BertConfig would keep a misspelt size as an unused attribute
        raise TypeError(f"tiny_bert_config: unknown sizes {unknown}; known: {sorted(TINY_BERT)}")
    return BertConfig(**(TINY_BERT | sizes))


def tiny_bert(*, pooling: bool = True, **sizes: int) -> nn.Module:
    """A freshly initialised ``transformers.BertModel`` of :func:`tiny_bert_config` sizes."""
    from transformers import BertModel

    return BertModel(tiny_bert_config(**sizes), add_pooling_layer=pooling)
