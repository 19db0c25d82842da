"""inject_multilora and friends on an nn.Sequential, a small named MLP and a tiny BertModel."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from spectra.multilora import (
    MultiLoRAConfig,
    MultiLoRALinear,
    inject_multilora,
    mark_only_multilora_trainable,
    merge_multilora,
    multilora_layers,
    multilora_state_dict,
    unmerge_multilora,
)
from tests.models import tiny_bert


def _tiny_bert() -> nn.Module:
    pytest.importorskip("transformers")
    return tiny_bert(max_position_embeddings=32).eval()


def _seq() -> nn.Sequential:
    return nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 3))


def test_sequential_by_index_names() -> None:
    model = _seq()
    paths = inject_multilora(model, MultiLoRAConfig(r=2, n=3, target_modules=("0", "4")))
    assert paths == ["0", "4"]
    assert isinstance(model[0], MultiLoRALinear) and isinstance(model[4], MultiLoRALinear)
    assert type(model[2]) is nn.Linear
    assert list(multilora_layers(model)) == ["0", "4"]


def test_only_adapter_params_trainable() -> None:
    model = _seq()
    inject_multilora(model, MultiLoRAConfig(r=2, n=3, target_modules=("0", "4")))
    count = mark_only_multilora_trainable(model)
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable == sorted(
        f"{m}.{k}" for m in ("0", "4") for k in ("multilora_A", "multilora_B", "multilora_scaling")
    )
    # layer 0: A 3·2·8 + B 3·6·2 + s 3·6; layer 4: A 3·2·6 + B 3·3·2 + s 3·3
    assert count == (48 + 36 + 18) + (36 + 18 + 9)


def test_no_match_lists_available_linear_names() -> None:
    with pytest.raises(ValueError, match=r"none of the 3 nn\.Linear.*end in: 0, 2, 4"):
        inject_multilora(_seq(), MultiLoRAConfig(target_modules=("query",)))


def test_double_injection_refused() -> None:
    model = _seq()
    config = MultiLoRAConfig(r=2, n=2, target_modules=("0",))
    inject_multilora(model, config)
    with pytest.raises(ValueError, match="already hold MultiLoRA"):
        inject_multilora(model, config)
    with pytest.raises(ValueError, match="already hold MultiLoRA"):
        inject_multilora(model, MultiLoRAConfig(r=2, n=2, target_modules=("re:.*",)))
    # The wrapped Linear is not a target: no second layer nests inside the first.
    with pytest.raises(ValueError, match="match none"):
        inject_multilora(model, MultiLoRAConfig(target_modules=(r"re:0\.base_layer",)))
    assert inject_multilora(model, MultiLoRAConfig(target_modules=("2",))) == ["2"]


def test_multihead_attention_out_proj_refused() -> None:
    model = nn.Sequential(nn.MultiheadAttention(8, 2))
    with pytest.raises(ValueError, match="out_proj of an nn.MultiheadAttention"):
        inject_multilora(model, MultiLoRAConfig(target_modules=("out_proj",)))


def test_bert_injection_by_names_keeps_outputs_and_trains_only_adapters() -> None:
    model = _tiny_bert()
    reference = copy.deepcopy(model)
    ids = torch.randint(0, 50, (2, 7))
    config = MultiLoRAConfig(r=4, n=2, target_modules=("query", "value"))
    paths = inject_multilora(model, config)
    assert paths == [
        f"encoder.layer.{i}.attention.self.{m}" for i in range(2) for m in ("query", "value")
    ]
    # ΔW = 0 at init: the adapted model computes exactly what the original did.
    assert torch.equal(model(ids).last_hidden_state, reference(ids).last_hidden_state)
    count = mark_only_multilora_trainable(model)
    assert count == 4 * (2 * 4 * 16 + 2 * 16 * 4 + 2 * 16)
    model(ids).last_hidden_state.square().sum().backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    assert grads == {f"{p}.multilora_scaling" for p in paths} | {
        f"{p}.{k}" for p in paths for k in ("multilora_A", "multilora_B")
    }
    assert set(multilora_state_dict(model)) == {
        f"{p}.{k}" for p in paths for k in ("multilora_A", "multilora_B", "multilora_scaling")
    }


def test_bert_regex_targets_one_layer() -> None:
    model = _tiny_bert()
    paths = inject_multilora(
        model, MultiLoRAConfig(target_modules=(r"re:encoder\.layer\.1\..*\.dense",))
    )
    assert paths == [
        "encoder.layer.1.attention.output.dense",
        "encoder.layer.1.intermediate.dense",
        "encoder.layer.1.output.dense",
    ]


def _randomized_model() -> nn.Sequential:
    model = _seq()
    inject_multilora(model, MultiLoRAConfig(r=2, n=3, target_modules=("0", "2", "4")))
    with torch.no_grad():
        for layer in multilora_layers(model).values():
            layer.multilora_scaling.normal_()
    return model


def test_model_merge_unmerge_roundtrip() -> None:
    model = _randomized_model()
    x = torch.randn(5, 8)
    y = model(x)
    weights = {p: m.base_layer.weight.clone() for p, m in multilora_layers(model).items()}
    assert merge_multilora(model) == ["0", "2", "4"]
    torch.testing.assert_close(model(x), y, rtol=1e-5, atol=1e-6)
    with pytest.raises(RuntimeError, match="already merged"):
        merge_multilora(model)
    assert unmerge_multilora(model) == ["0", "2", "4"]
    for p, m in multilora_layers(model).items():
        assert torch.equal(m.base_layer.weight, weights[p])
    with pytest.raises(RuntimeError, match="nothing to unmerge"):
        unmerge_multilora(model)


def test_model_safe_merge_is_all_or_none() -> None:
    model = _randomized_model()
    weights = {p: m.base_layer.weight.clone() for p, m in multilora_layers(model).items()}
    with torch.no_grad():
        model[2].multilora_scaling[0, 0] = float("inf")
    with pytest.raises(ValueError, match="^2: .*no layer was merged"):
        merge_multilora(model, safe_merge=True)
    for p, m in multilora_layers(model).items():
        assert not m.merged
        assert torch.equal(m.base_layer.weight, weights[p])


def test_functions_refuse_model_without_multilora() -> None:
    with pytest.raises(ValueError, match="call inject_multilora"):
        mark_only_multilora_trainable(_seq())
    with pytest.raises(ValueError, match="call inject_multilora"):
        merge_multilora(_seq())
