"""spectra extract: real PEFT loads the adapter and its merge equals W0 + the truncated ΔW."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import save_file
from transformers import BertModel, GPT2Config, GPT2Model

from spectra.decide.extract import SIDECAR, ExtractOptions, extract
from spectra.errors import AmbiguousInputError, CheckpointMismatchError, OptionError
from spectra.multilora import (
    MultiLoRAConfig,
    inject_multilora,
    multilora_layers,
    save_multilora,
)
from tests.decide.conftest import (
    FullPair,
    best_rank,
    peft_merge,
    randomize_lora,
)
from tests.models import Linears, tiny_bert

TOL = 1e-5


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


def _check_merge(pair: FullPair, out: Path, ranks: dict[str, int]) -> dict[str, float]:
    """Every weight of the merged model against the float64 reference; returns the errors."""
    merged = peft_merge(pair.base, out)
    errors = {}
    for key, w in merged.items():
        delta = pair.tuned_sd[key] - pair.base_sd[key]
        module = key.removesuffix(".weight")
        if key.endswith(".weight") and module in ranks:
            want = pair.base_sd[key].double() + best_rank(delta, ranks[module])
        else:  # carried whole (modules_to_save, lora_B.bias) or unchanged
            want = pair.tuned_sd[key].double()
        errors[key] = _rel(w, want)
    return errors


def test_full_fine_tune_with_embeddings_merges_to_the_truncation(
    weights_pair: FullPair, tmp_path: Path
) -> None:
    out = tmp_path / "adapter"
    result = extract(
        weights_pair.tuned, out, base=weights_pair.base, options=ExtractOptions(rank=3)
    )
    ranks = {m.module: m.rank for m in result.modules}
    assert ranks["embeddings.word_embeddings"] == 3
    assert ranks["embeddings.token_type_embeddings"] == 2  # (2, 16): clipped, exact
    assert {m.layout for m in result.modules} == {"linear", "embedding"}
    assert result.modules_to_save == [] and result.lora_bias == []
    errors = _check_merge(weights_pair, out, ranks)
    assert max(errors.values()) < TOL, max(errors.items(), key=lambda kv: kv[1])
    # the stated error is the Eckart–Young tail of the float64 reference
    for m in result.modules:
        key = f"{m.module}.weight"
        delta = (weights_pair.tuned_sd[key] - weights_pair.base_sd[key]).double()
        want = _rel(best_rank(delta, m.rank), delta)
        assert m.relative_error == pytest.approx(want, rel=1e-4, abs=1e-6)
    sidecar = json.loads((out / SIDECAR).read_text())
    assert {e["module"]: e["rank"] for e in sidecar["modules"]} == ranks


def test_changed_norms_and_biases_are_carried(all_pair: FullPair, tmp_path: Path) -> None:
    out = tmp_path / "adapter"
    result = extract(all_pair.tuned, out, base=all_pair.base, options=ExtractOptions(rank=4))
    assert "encoder.layer.0.attention.output.LayerNorm" in result.modules_to_save
    assert "embeddings.LayerNorm" in result.modules_to_save
    # the Linear biases travel as lora_B.bias; PEFT refuses lora_bias on embeddings, which
    # are therefore saved whole (cheaper than saving every Linear whole here)
    assert "encoder.layer.0.attention.self.query" in result.lora_bias
    assert "embeddings.word_embeddings" in result.modules_to_save
    ranks = {m.module: m.rank for m in result.modules}
    errors = _check_merge(all_pair, out, ranks)
    assert max(errors.values()) < TOL, max(errors.items(), key=lambda kv: kv[1])
    merged = peft_merge(all_pair.base, out)
    norm = "encoder.layer.0.output.LayerNorm.weight"
    assert torch.equal(merged[norm], all_pair.tuned_sd[norm])  # round trip, bit for bit


def test_energy_and_budget_choose_per_module_ranks(weights_pair: FullPair, tmp_path: Path) -> None:
    result = extract(
        weights_pair.tuned,
        tmp_path / "e",
        base=weights_pair.base,
        options=ExtractOptions(energy=0.5),
    )
    ranks = {m.module: m.rank for m in result.modules}
    assert all(m.relative_error <= 0.5**0.5 + 1e-9 for m in result.modules)  # ≥ 50 % kept
    assert max(_check_merge(weights_pair, tmp_path / "e", ranks).values()) < TOL
    config = json.loads((tmp_path / "e" / "adapter_config.json").read_text())
    assert config["lora_alpha"] == config["r"]  # s = 1
    budget = extract(
        weights_pair.tuned,
        tmp_path / "b",
        base=weights_pair.base,
        options=ExtractOptions(budget=2000),
    )
    assert budget.params <= 2000


def _lora_adapter(tmp_path: Path, r: int, *, use_rslora: bool = False) -> tuple[Path, Path]:
    model = tiny_bert(num_hidden_layers=1)
    model.save_pretrained(tmp_path / "base")
    config = LoraConfig(
        r=r, lora_alpha=2 * r, use_rslora=use_rslora,
        target_modules=["query", "value", "word_embeddings"],
    )  # fmt: skip
    peft_model = get_peft_model(model, config)
    randomize_lora(peft_model)
    peft_model.save_pretrained(str(tmp_path / "big"))
    return tmp_path / "base", tmp_path / "big"


def test_resize_equals_the_optimum_of_the_adapter_delta(tmp_path: Path) -> None:
    base, big = _lora_adapter(tmp_path, 6, use_rslora=True)
    small = tmp_path / "small"
    result = extract(big, small, options=ExtractOptions(rank=2))
    assert {m.module for m in result.modules} >= {"encoder.layer.0.attention.self.query"}
    before, after = peft_merge(base, big), peft_merge(base, small)
    w0 = dict(BertModel.from_pretrained(str(base)).state_dict())
    for key in before:
        module = key.removesuffix(".weight")
        if module.rsplit(".", 1)[-1] not in ("query", "value", "word_embeddings"):
            assert torch.equal(before[key], after[key])
            continue
        want = w0[key].double() + best_rank(before[key] - w0[key], 2)
        assert _rel(after[key], want) < TOL


def test_randomized_svd_states_its_achieved_error(weights_pair: FullPair, tmp_path: Path) -> None:
    exact = extract(
        weights_pair.tuned, tmp_path / "x", base=weights_pair.base, options=ExtractOptions(rank=3)
    )
    rand = extract(
        weights_pair.tuned, tmp_path / "r", base=weights_pair.base,
        options=ExtractOptions(rank=3, svd="randomized"),
    )  # fmt: skip
    merged = peft_merge(weights_pair.base, tmp_path / "r")
    by_name = {m.module: m for m in exact.modules}
    for m in rand.modules:
        key = f"{m.module}.weight"
        delta = weights_pair.tuned_sd[key] - weights_pair.base_sd[key]
        achieved = _rel(merged[key] - weights_pair.base_sd[key], delta)
        assert m.relative_error == pytest.approx(achieved, rel=1e-3, abs=1e-6)
        assert m.relative_error >= by_name[m.module].relative_error - 1e-6  # never beats optimum


def test_bad_input_is_refused_and_nothing_is_written(
    weights_pair: FullPair, tmp_path: Path
) -> None:
    out = tmp_path / "never"
    with pytest.raises(OptionError, match="larger than every adapted matrix"):
        extract(weights_pair.tuned, out, base=weights_pair.base, options=ExtractOptions(rank=999))
    with pytest.raises(OptionError, match="smaller than one rank per module"):
        extract(weights_pair.tuned, out, base=weights_pair.base, options=ExtractOptions(budget=10))
    other = tiny_bert(num_hidden_layers=1, hidden_size=8, intermediate_size=16)  # 2 heads
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(CheckpointMismatchError, match="shape"):
        extract(weights_pair.tuned, out, base=tmp_path / "other", options=ExtractOptions(rank=2))
    flat = tmp_path / "flat"
    flat.mkdir()
    save_file(weights_pair.base_sd, str(flat / "base.safetensors"))
    with pytest.raises(AmbiguousInputError, match="--assume-linear"):
        extract(
            weights_pair.tuned, out, base=flat / "base.safetensors", options=ExtractOptions(rank=2)
        )
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_cli_extract_prints_totals_and_refuses_cleanly(
    weights_pair: FullPair, tmp_path: Path, run_cli
) -> None:
    out = tmp_path / "cli"
    r = run_cli("extract", weights_pair.base, weights_pair.tuned, "--rank", "2", "--out", out, "-q")
    assert r.code == 0, r.err
    assert "relative error" in r.out and (out / "adapter_model.safetensors").is_file()
    bad = run_cli(
        "extract", weights_pair.base, weights_pair.tuned, "--rank", "0", "--out", tmp_path / "x"
    )
    assert bad.code == 1 and bad.err.count("\n") == 1 and "--rank" in bad.err
    assert not (tmp_path / "x").exists()


def _net() -> torch.nn.Module:
    return Linears(up=(12, 20), down=(20, 12))


def test_multilora_resize_equals_the_optimum(tmp_path: Path) -> None:
    config = MultiLoRAConfig(r=3, n=3, lora_alpha=6, target_modules=("up", "down"))
    torch.manual_seed(0)
    net = _net()
    w0 = {k: v.clone() for k, v in net.state_dict().items()}
    inject_multilora(net, config)
    randomize_lora(net, seed=2, scale=1.0, marker="multilora", dtype=torch.float32)
    deltas = {p: m.get_delta_weight().detach() for p, m in multilora_layers(net).items()}
    path = save_multilora(net, tmp_path / "ml.safetensors", config)
    result = extract(path, tmp_path / "small", options=ExtractOptions(rank=4))
    assert {m.module: m.rank for m in result.modules} == {"up": 4, "down": 4}
    fresh = _net()
    fresh.load_state_dict(w0)
    merged = PeftModel.from_pretrained(fresh, str(tmp_path / "small")).merge_and_unload()
    for module, delta in deltas.items():
        want = w0[f"{module}.weight"].double() + best_rank(delta, 4)
        assert _rel(merged.state_dict()[f"{module}.weight"], want) < TOL


def test_gpt2_conv1d_resize_keeps_the_stored_layout(tmp_path: Path) -> None:
    """GPT-2 Conv1D weights are stored (in, out): PEFT's fan_in_fan_out layout."""
    config = GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    torch.manual_seed(0)
    GPT2Model(config).save_pretrained(tmp_path / "base")
    lora = LoraConfig(r=5, lora_alpha=5, target_modules=["c_attn"], fan_in_fan_out=True)
    peft_model = get_peft_model(GPT2Model.from_pretrained(str(tmp_path / "base")), lora)
    randomize_lora(peft_model)
    peft_model.save_pretrained(str(tmp_path / "big"))
    result = extract(tmp_path / "big", tmp_path / "small", options=ExtractOptions(rank=2))
    assert [m.layout for m in result.modules] == ["conv1d"]
    key = "h.0.attn.c_attn.weight"
    w0 = GPT2Model.from_pretrained(str(tmp_path / "base")).state_dict()[key]
    big = PeftModel.from_pretrained(
        GPT2Model.from_pretrained(str(tmp_path / "base")), str(tmp_path / "big")
    )
    small = PeftModel.from_pretrained(
        GPT2Model.from_pretrained(str(tmp_path / "base")), str(tmp_path / "small")
    )
    delta = big.merge_and_unload().state_dict()[key] - w0  # (in, out) as stored
    want = w0.double() + best_rank(delta, 2)
    assert _rel(small.merge_and_unload().state_dict()[key], want) < TOL


def test_matrices_left_out_by_modules_are_saved_whole(
    weights_pair: FullPair, tmp_path: Path
) -> None:
    out = tmp_path / "q"
    options = ExtractOptions(rank=2, modules=r"attention\.self\.query$")
    result = extract(weights_pair.tuned, out, base=weights_pair.base, options=options)
    assert [m.module for m in result.modules] == ["encoder.layer.0.attention.self.query"]
    assert "encoder.layer.0.attention.self.key" in result.modules_to_save
    assert "embeddings.word_embeddings" in result.modules_to_save
    errors = _check_merge(weights_pair, out, {m.module: m.rank for m in result.modules})
    assert max(errors.values()) < TOL


def test_existing_out_dir_is_replaced_whole(
    weights_pair: FullPair, tmp_path: Path, run_cli
) -> None:
    out = tmp_path / "adapter"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    r = run_cli(
        "extract", weights_pair.base, weights_pair.tuned, "--energy", "0.9", "--out", out, "-q"
    )
    assert r.code == 0, r.err
    assert sorted(p.name for p in out.iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", SIDECAR,
    ]  # fmt: skip
    inside = run_cli(
        "extract",
        weights_pair.base,
        weights_pair.tuned,
        "--rank",
        "2",
        "--out",
        weights_pair.tuned / "x",
    )
    assert inside.code == 1 and "never modifies its inputs" in inside.err
