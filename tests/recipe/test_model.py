"""The encoder the recipe loads, and the adapter targets it agrees on before training."""

from __future__ import annotations

import pytest
import torch

from spectra.errors import OptionError
from spectra.recipe.config import RecipeConfig
from spectra.recipe.model import (
    MultiTaskModel,
    load_base,
    planned_targets,
    prepare_lora,
    prepare_multilora,
)

LAYER_MODULES = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)


@pytest.fixture(scope="module")
def base():
    return load_base()


def test_encoder_is_minilm_without_pooler(base) -> None:
    tokenizer, encoder = base
    assert encoder.pooler is None
    assert (encoder.config.num_hidden_layers, encoder.config.hidden_size) == (6, 384)
    assert not any(k.startswith("pooler") for k in encoder.state_dict())
    assert tokenizer("is 47 larger than 112?")["input_ids"][0] == tokenizer.cls_token_id


def test_default_targets_are_attention_and_mlp_of_every_layer(base) -> None:
    expected = sorted(f"encoder.layer.{i}.{m}" for i in range(6) for m in LAYER_MODULES)
    assert planned_targets(base[1], RecipeConfig()) == expected


def test_peft_adapts_exactly_the_planned_modules(base) -> None:
    import copy

    config = RecipeConfig()
    model = MultiTaskModel(copy.deepcopy(base[1]), {"t": 2})
    assert prepare_lora(model, config) == planned_targets(base[1], config)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all("lora_" in n or n.startswith("heads.") for n in trainable)
    assert {"heads.t.weight", "heads.t.bias"} <= trainable


def test_targets_matching_nothing_are_refused(base) -> None:
    with pytest.raises(OptionError, match="matches no nn.Linear") as info:
        planned_targets(base[1], RecipeConfig(target_modules=("q_proj",)))
    assert info.value.key == "target_modules"


def test_patterns_peft_reads_differently_are_refused_before_training(base) -> None:
    # "re:" is the MultiLoRA layer's regex prefix; PEFT reads it as a module name.
    config = RecipeConfig(target_modules=("re:.*query",))
    with pytest.raises(OptionError, match="different modules"):
        planned_targets(base[1], config)
    only_multilora = RecipeConfig(target_modules=("re:.*query",), methods=("multilora",))
    assert len(planned_targets(base[1], only_multilora)) == 6


def test_mean_pooled_embedding_matches_sentence_transformers_recipe(base) -> None:
    # all-MiniLM-L6-v2's own pooling is the masked mean; padding must not change it.
    tokenizer, encoder = base
    model = MultiTaskModel(encoder, {"t": 2}).eval()
    one = tokenizer(["wonderful"], return_tensors="pt")
    two = tokenizer(["wonderful", "is 47 larger than 112?"], return_tensors="pt", padding=True)
    with torch.no_grad():
        alone = model.encode(one["input_ids"], one["attention_mask"])
        padded = model.encode(two["input_ids"], two["attention_mask"])[:1]
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("init", "scaling"), [("multilora", "vector"), ("lora", "vector"), ("lora", "none")]
)
def test_multilora_variants_start_at_zero_update_with_the_chosen_parameters(
    base, init, scaling
) -> None:
    import copy

    from spectra.multilora import MultiLoRALinear

    config = RecipeConfig(multilora_init=init, multilora_scaling=scaling)
    model = MultiTaskModel(copy.deepcopy(base[1]), {"t": 2})
    prepare_multilora(model, config)
    layers = [m for m in model.modules() if isinstance(m, MultiLoRALinear)]
    assert len(layers) == 36
    for layer in layers:
        assert torch.count_nonzero(layer.get_delta_weight()) == 0  # ΔW = 0 at step 0
        a, b, s = layer.multilora_A, layer.multilora_B, layer.multilora_scaling
        assert a.abs().max() > 0  # A drawn (Kaiming) in every variant
        if init == "multilora":
            assert b.abs().max() > 0 and torch.count_nonzero(s) == 0
        else:
            assert torch.count_nonzero(b) == 0 and torch.equal(s, torch.ones_like(s))
        assert s.shape == ((4, layer.base_layer.out_features) if scaling == "vector" else (4,))
        assert s.requires_grad == (scaling != "none")
        assert a.requires_grad and b.requires_grad
