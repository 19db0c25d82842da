"""Real model layouts: every module row carries (stack, layer, module_type), unique per adapted
matrix, on a T5 encoder–decoder and a CLIP text + vision model built from real configs with
real PEFT LoRA adapters; per-layer figures draw one line per stack; natural order."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from spectra.analysis import AnalysisOptions, analyze
from spectra.layout import natural_key, positions
from spectra.plots import layer_dominance_figure
from spectra.tables import modules_table


@pytest.mark.parametrize(
    ("names", "want"),
    [
        (  # T5: encoder and decoder reuse block indices
            ["encoder.block.3.layer.0.SelfAttention.q", "decoder.block.3.layer.1.EncDecAttention.q"],
            [("encoder", 3, "layer.0.SelfAttention.q"), ("decoder", 3, "layer.1.EncDecAttention.q")],
        ),
        (  # BART: a shared leading "model." and trailing "layers" are dropped
            ["model.encoder.layers.0.self_attn.q_proj", "model.decoder.layers.0.encoder_attn.q_proj"],
            [("encoder", 0, "self_attn.q_proj"), ("decoder", 0, "encoder_attn.q_proj")],
        ),
        (  # CLIP: two towers; a module outside any stack is its own type
            ["text_model.encoder.layers.1.mlp.fc1", "vision_model.encoder.layers.1.mlp.fc1",
             "text_projection"],
            [("text_model", 1, "mlp.fc1"), ("vision_model", 1, "mlp.fc1"), ("", None, "text_projection")],
        ),
        (  # diffusers U-Net: the block is the stack, the next index the layer
            ["down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
             "mid_block.attentions.0.proj_in", "up_blocks.2.resnets.1.conv1"],
            [("down_blocks.1", 0, "attentions.transformer_blocks.0.attn1.to_q"),
             ("mid_block", 0, "attentions.proj_in"), ("up_blocks.2", 1, "resnets.conv1")],
        ),
        (  # BERT: one stack → ""
            ["encoder.layer.10.attention.self.query", "encoder.layer.2.attention.self.query"],
            [("", 10, "attention.self.query"), ("", 2, "attention.self.query")],
        ),
    ],
)  # fmt: skip
def test_positions_of_known_layouts(names: list[str], want: list[tuple]) -> None:
    got = positions(names)
    assert [(got[n].stack, got[n].layer, got[n].module_type) for n in names] == want


def test_natural_order() -> None:
    names = ["encoder.block.10.q", "encoder.block.2.q", "decoder.block.1.q", "encoder.block.2.k"]
    assert sorted(names, key=natural_key) == [
        "decoder.block.1.q",
        "encoder.block.2.k",
        "encoder.block.2.q",
        "encoder.block.10.q",
    ]


def _save_with_lora(model: torch.nn.Module, targets: list[str], root: Path) -> None:
    """base.safetensors (every tensor cloned: T5 ties its embeddings) and a real PEFT LoRA in
    lora/, its B factors randomized so that ΔW ≠ 0."""
    from peft import LoraConfig, get_peft_model

    base = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(base, str(root / "base.safetensors"))
    peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=targets))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g))
    peft_model.save_pretrained(str(root / "lora"))


def _analyze(root: Path) -> dict:
    return analyze(root / "base.safetensors", [root / "lora"], options=AnalysisOptions(top_k=2))


def _assert_unique_positions(result: dict, stacks: set[str], matrices: int) -> None:
    rows = result["modules"]
    assert len(rows) == matrices
    keys = {(r["stack"], r["layer"], r["module_type"]) for r in rows}
    assert len(keys) == matrices  # one (stack, layer, type) per adapted matrix
    assert {r["stack"] for r in rows} == stacks


def test_t5_encoder_decoder(tmp_path: Path) -> None:
    from transformers import T5Config, T5Model

    torch.manual_seed(0)
    config = T5Config(
        vocab_size=32, d_model=8, d_kv=4, d_ff=16, num_heads=2, num_layers=11,
        num_decoder_layers=3, relative_attention_num_buckets=4,
    )  # fmt: skip
    _save_with_lora(T5Model(config), ["q", "v"], tmp_path)
    result = _analyze(tmp_path)
    # encoder: 11 blocks × (q, v); decoder: 3 blocks × (self q, v + cross q, v)
    _assert_unique_positions(result, {"encoder", "decoder"}, 11 * 2 + 3 * 4)
    order = [r["module"] for r in result["modules"]]
    assert order.index("encoder.block.2.layer.0.SelfAttention.q") < order.index(
        "encoder.block.10.layer.0.SelfAttention.q"
    )
    assert order == sorted(order, key=natural_key)
    # per-layer figure: one line per stack, never one line across both
    fig = layer_dominance_figure(result)
    panel = next(ax for ax in fig.axes if ax.get_title() == "layer.0.SelfAttention.q")
    lines = {ln.get_label(): list(ln.get_xdata()) for ln in panel.lines}
    assert lines == {"lora · decoder": [0, 1, 2], "lora · encoder": list(range(11))}
    table = modules_table(result)
    stack_col = table.header.index("stack")
    assert {row[stack_col] for row in table.rows} == {"encoder", "decoder"}


def test_clip_text_and_vision_towers(tmp_path: Path) -> None:
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    small = {"hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 2,
             "num_attention_heads": 2}  # fmt: skip
    config = CLIPConfig(
        text_config={**small, "vocab_size": 32, "max_position_embeddings": 8},
        vision_config={**small, "image_size": 8, "patch_size": 4},
        projection_dim=8,
    )
    _save_with_lora(CLIPModel(config), ["q_proj", "v_proj"], tmp_path)
    result = _analyze(tmp_path)
    _assert_unique_positions(result, {"text_model", "vision_model"}, 2 * 2 * 2)


def test_single_stack_bert_has_empty_stack(tmp_path: Path) -> None:
    from tests.models import tiny_bert

    torch.manual_seed(0)
    _save_with_lora(tiny_bert(pooling=False), ["query"], tmp_path)
    result = _analyze(tmp_path)
    _assert_unique_positions(result, {""}, 2)
    fig = layer_dominance_figure(result)
    assert {ln.get_label() for ax in fig.axes for ln in ax.lines} == {"lora"}
