"""The benchmark generator writes what Hugging Face and PEFT write: checked against the real
LlamaForCausalLM state dict and the real PEFT library."""

from __future__ import annotations

import json

import pytest
import torch

from spectra.io import open_tensors
from spectra.loaders import LoadOptions, open_checkpoint

from .conftest import Synthetic


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False,
    )  # fmt: skip
    return LlamaForCausalLM(cfg)


def test_names_and_shapes_are_llamas(synthetic: Synthetic) -> None:
    expected = {k: tuple(v.shape) for k, v in _tiny_llama().state_dict().items()}
    src = open_tensors(synthetic.base)
    assert {k: src.shape(k) for k in src.keys()} == expected  # noqa: SIM118 (not iterable)
    index = json.loads((synthetic.base / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2  # really sharded


def test_7b_preset_has_224_lora_modules_and_llama_sizes(make_synthetic) -> None:
    shape = make_synthetic.shape_from_args(make_synthetic._parse(["out", "--scale", "7b"]))
    params = sum(torch.Size(s).numel() for _, s in shape.tensors())
    assert len(shape.lora_modules()) == 224
    assert params == 6_738_415_616  # LLaMA-2-7B's parameter count


def test_full_pair_differs_by_the_generated_update(synthetic: Synthetic) -> None:
    reader = open_checkpoint(synthetic.full, base=open_tensors(synthetic.base))
    mods = [m.module for m in reader.modules()]
    assert len(mods) == 2 + 7 * 2  # embed, lm_head, 7 matrices per layer
    delta = reader.update("model.layers.0.mlp.down_proj").dense
    assert delta is not None and delta.shape == (32, 48)
    # ΔW std ≈ √2 · noise (noise part + equal-energy rank-8 part), noise = 1e-3
    assert 0.8e-3 < float(delta.std()) < 2.2e-3


def test_real_peft_reads_the_adapter_with_the_same_update(synthetic: Synthetic) -> None:
    peft = pytest.importorskip("peft")
    model = peft.PeftModel.from_pretrained(_tiny_llama(), str(synthetic.lora))
    layer = model.base_model.model.model.layers[1].mlp.up_proj
    oracle = layer.get_delta_weight("default").double()  # (48, 32)
    reader = open_checkpoint(
        synthetic.lora, base=open_tensors(synthetic.base), options=LoadOptions(dtype=torch.float64)
    )
    ours = reader.update("model.layers.1.mlp.up_proj").materialize()
    assert len(reader.modules()) == 14
    torch.testing.assert_close(ours, oracle, rtol=1e-6, atol=1e-9)
