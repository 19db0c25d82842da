"""Tracker and LiveAdapter: ΔW of the live layers against PEFT's own get_delta_weight (rsLoRA,
embedding, conv, DoRA), metrics against closed forms, no effect on training, bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from spectra.errors import AdapterConfigError, OptionError
from spectra.track import LiveAdapter, Tracker
from spectra.track.tracker import summarize_values
from tests.track.training import Tokens, multilora_model, peft_model, tiny_classifier, train


def _merged_delta(layer: nn.Module, adapter: str = "default") -> torch.Tensor:
    """PEFT's own ΔW of a layer (the oracle), float64, flattened to (out, in·kh·kw)."""
    delta = layer.get_delta_weight(adapter).detach().double()
    return delta.reshape(delta.shape[0], -1)


def _randomize_b(model: nn.Module) -> None:
    """Give every LoRA B (zero at init) random values, so that ΔW ≠ 0; then make the model
    float64, so that PEFT's own ΔW (the oracle) is computed in float64 too."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "lora_embedding_B" in name:
                p.copy_(torch.randn(p.shape, generator=g))
    model.double()


def _live_deltas(model: nn.Module) -> dict[str, torch.Tensor]:
    reader = LiveAdapter(model, dtype=torch.float64)
    return {m.module: reader.update(m.module).materialize() for m in reader.modules()}


@pytest.mark.parametrize("use_rslora", [False, True])
def test_lora_delta_equals_peft_including_rslora(use_rslora: bool) -> None:
    model = peft_model(r=4, use_rslora=use_rslora)
    _randomize_b(model)
    live = _live_deltas(model)
    assert len(live) == 4
    for name, delta in live.items():
        layer = model.get_submodule("base_model.model." + name)
        assert layer.scaling["default"] == (8 / math.sqrt(4) if use_rslora else 8 / 4)
        torch.testing.assert_close(delta, _merged_delta(layer), rtol=1e-12, atol=1e-12)


def test_embedding_lora_is_read_in_the_stored_layout() -> None:
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        tiny_classifier(), LoraConfig(r=2, lora_alpha=4, target_modules=["word_embeddings"])
    )
    _randomize_b(model)
    (name, delta), = _live_deltas(model).items()  # fmt: skip
    assert name == "bert.embeddings.word_embeddings"
    layer = model.get_submodule("base_model.model." + name)
    assert delta.shape == layer.get_base_layer().weight.shape  # (n_emb, dim)
    torch.testing.assert_close(delta, _merged_delta(layer), rtol=1e-12, atol=1e-12)


class _ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_conv_lora_is_flattened_like_the_loader() -> None:
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_ConvNet(), LoraConfig(r=2, lora_alpha=2, target_modules=["conv"]))
    _randomize_b(model)
    (name, delta), = _live_deltas(model).items()  # fmt: skip
    assert name == "conv" and delta.shape == (5, 3 * 3 * 3)
    torch.testing.assert_close(delta, _merged_delta(model.get_submodule("base_model.model.conv")))


def test_dora_delta_equals_merged_minus_base() -> None:
    model = peft_model(r=4, use_dora=True)
    _randomize_b(model)
    reader = LiveAdapter(model, dtype=torch.float64)
    assert reader.kind == "dora"
    for info in reader.modules():
        update = reader.update(info.module)
        assert not update.factored
        layer = model.get_submodule("base_model.model." + info.module)
        w0 = layer.get_base_layer().weight.detach().clone()
        layer.merge()  # PEFT's own DoRA merge: W' = m ⊙ (W0 + sBA) / ‖W0 + sBA‖
        merged = layer.get_base_layer().weight.detach().clone()
        layer.unmerge()
        torch.testing.assert_close(update.dense, merged - w0, rtol=1e-9, atol=1e-12)


def test_multilora_delta_equals_the_layer() -> None:
    model, _ = multilora_model()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "multilora_scaling" in name:
                p.normal_()
    reader = LiveAdapter(model, dtype=torch.float64)
    assert reader.kind == "multilora"
    for info in reader.modules():
        layer = model.get_submodule(info.module)
        update = reader.update(info.module)
        assert update.groups == (2, 2)
        expected = layer.get_delta_weight().double()
        torch.testing.assert_close(update.materialize(), expected, rtol=1e-6, atol=1e-7)


def test_metrics_of_a_chosen_spectrum() -> None:
    """ΔW with singular values (3, 2, 1, 0.5) by construction: every metric in closed form."""
    model = peft_model(r=4)
    model.double()
    sigma = torch.tensor([3.0, 2.0, 1.0, 0.5], dtype=torch.float64)
    layer = model.get_submodule("base_model.model.bert.encoder.layer.0.attention.self.query")
    s = layer.scaling["default"]
    q_out, _ = torch.linalg.qr(torch.randn(16, 4, dtype=torch.float64))
    q_in, _ = torch.linalg.qr(torch.randn(16, 4, dtype=torch.float64))
    with torch.no_grad():  # s·B·A = Q_out diag(σ) Q_inᵀ
        layer.lora_B["default"].weight.copy_(q_out * sigma / s)
        layer.lora_A["default"].weight.copy_(q_in.T)
    record = Tracker(every=1, modules=r"layer\.0\.attention\.self\.query", dtype="float64").measure(
        model, 1
    )
    values = record.modules["bert.encoder.layer.0.attention.self.query"]
    energy = sigma**2
    p = sigma / sigma.sum()
    assert values["top1_energy"] == pytest.approx(9 / 14.25, rel=1e-12)
    assert values["stable_rank"] == pytest.approx(14.25 / 9, rel=1e-12)
    assert values["effective_rank"] == pytest.approx(
        float(torch.exp(-(p * p.log()).sum())), rel=1e-12
    )
    assert values["k90"] == 2  # 13 / 14.25 = 0.912 ≥ 0.9 > 9 / 14.25
    assert float(energy[:2].sum() / energy.sum()) > 0.9
    assert values["rank"] == 4 and values["module_type"] == "attention.self.query"


def test_summary_mean_and_max_per_type() -> None:
    modules = {
        "a.0.q": {"module_type": "q", "top1_energy": 0.2, "effective_rank": 3.0, "stable_rank": 2.0, "k90": 3},
        "a.1.q": {"module_type": "q", "top1_energy": 0.6, "effective_rank": 1.0, "stable_rank": 1.0, "k90": 1},
        "a.0.v": {"module_type": "v", "top1_energy": None, "effective_rank": 0.0, "stable_rank": 0.0, "k90": None},
    }  # fmt: skip
    out = summarize_values(modules, "p")
    assert out["p/top1_energy/q/mean"] == pytest.approx(0.4)
    assert out["p/top1_energy/q/max"] == 0.6
    assert out["p/top1_energy/all/mean"] == pytest.approx(0.4)  # None left out
    assert "p/top1_energy/v/mean" not in out  # no defined value
    assert out["p/effective_rank/all/mean"] == pytest.approx(4 / 3)
    assert out["p/k90/all/max"] == 3


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_tracking_changes_nothing_in_training(tmp_path) -> None:
    """A Trainer run tracked at every step ends with bit-identical weights and RNG state to an
    untracked one (LoRA dropout and BERT dropout draw from the RNG on every step)."""
    from spectra.track import SpectraCallback

    plain = peft_model()
    train(plain, tmp_path / "plain", steps=4)
    rng_plain = torch.get_rng_state()
    tracked = peft_model()
    made = []

    def make(trainer):
        made.append(SpectraCallback(trainer, every=1))
        return made

    train(tracked, tmp_path / "tracked", steps=4, make_callbacks=make)
    rng_tracked = torch.get_rng_state()
    assert made[0].tracker.last.step == 4
    a, b = _params(plain), _params(tracked)
    assert a.keys() == b.keys()
    changed = [k for k in a if "lora_B" in k and not torch.equal(a[k], torch.zeros_like(a[k]))]
    assert changed  # the runs did train
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert torch.equal(rng_plain, rng_tracked)


def test_plain_loop_hook_and_jsonl(tmp_path) -> None:
    model, _ = multilora_model()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    tracker = Tracker(every=2, jsonl=tmp_path / "logs" / "t.jsonl")
    data = Tokens()
    records = []
    for step in range(1, 6):
        batch = data[slice(8 * step, 8 * step + 8)]
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad()
        records.append(tracker.step(model, step))
    assert [r is not None for r in records] == [False, True, False, True, False]
    lines = [json.loads(x) for x in (tmp_path / "logs" / "t.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [2, 4]
    assert lines[1]["summary"] == pytest.approx(records[3].summary)
    assert set(lines[1]["modules"]) == {r["module"] for r in records[3].rows}


def test_no_adapter_several_adapters_and_bad_settings() -> None:
    with pytest.raises(AdapterConfigError, match="no PEFT LoRA layer and no spectra MultiLoRA"):
        LiveAdapter(tiny_classifier())
    from peft import LoraConfig

    model = peft_model()
    model.add_adapter("other", LoraConfig(r=2, target_modules=["query"]))
    model.base_model.set_adapter(["default", "other"])
    with pytest.raises(AdapterConfigError, match="2 active LoRA adapters"):
        LiveAdapter(model)
    assert len(LiveAdapter(model, adapter="other").modules()) == 2
    with pytest.raises(AdapterConfigError, match="adapter 'nope' is in no LoRA layer"):
        LiveAdapter(model, adapter="nope")
    with pytest.raises(OptionError, match="every"):
        Tracker(every=0)
    with pytest.raises(OptionError, match="stop_on"):
        Tracker(stop_on="intruders")  # type: ignore[arg-type]
    with pytest.raises(OptionError, match="leave none"):
        Tracker(modules="nothing-matches").measure(peft_model(), 1)


def test_module_names_are_base_model_paths_whatever_the_wrapper() -> None:
    model = peft_model()
    names = [m.module for m in LiveAdapter(model).modules()]
    assert names[0] == "bert.encoder.layer.0.attention.self.query" and len(names) == 4
    assert [m.module for m in LiveAdapter(model.base_model).modules()] == names  # LoraModel
    assert [m.module for m in LiveAdapter(model.base_model.model).modules()] == names  # inner
