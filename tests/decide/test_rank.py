"""spectra rank: k_τ per module, the budget allocation against brute force, and configs that
real PEFT applies with exactly the intended rank per module."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer
from transformers import BertForSequenceClassification, BertModel

from spectra.decide.peft_config import check_unique_targets, lora_config_dict
from spectra.decide.rank import ModuleSpectrum, budget_ranks, energy_ranks, plan
from spectra.engine.metrics import energy_rank
from spectra.errors import OptionError
from tests.decide.conftest import FullPair, randomize_lora
from tests.models import tiny_bert, tiny_bert_config


def _spec(name: str, values: list[float], shape: tuple[int, int] = (4, 4)) -> ModuleSpectrum:
    return ModuleSpectrum(name, shape, torch.tensor(values, dtype=torch.float64))


def test_energy_rank_closed_form() -> None:
    s = torch.tensor([3.0, 2.0, 1.0, 0.0])  # energies 9, 4, 1 of 14
    assert energy_rank(s, 9 / 14) == 1
    assert energy_rank(s, 9 / 14 + 1e-6) == 2
    assert energy_rank(s, 0.95) == 3 and energy_rank(s, 1.0) == 3  # zeros add nothing
    assert energy_rank(torch.zeros(3), 0.9) == 0


def test_energy_ranks_clip_to_one_and_max_rank() -> None:
    spectra = [_spec("a", [3, 2, 1, 1]), _spec("b", [1, 1, 1, 1]), _spec("z", [0, 0])]
    assert energy_ranks(spectra, 0.9) == {"a": 3, "b": 4, "z": 0}
    assert energy_ranks(spectra, 0.9, max_rank=2) == {"a": 2, "b": 2, "z": 0}
    with pytest.raises(OptionError):
        energy_ranks(spectra, 1.5)


def _brute(spectra: list[ModuleSpectrum], budget: int) -> float:
    best = -1.0
    ranges = [range(1, s.cap + 1) for s in spectra]
    for ranks in itertools.product(*ranges):
        if sum(r * s.cost for r, s in zip(ranks, spectra, strict=True)) <= budget:
            best = max(best, sum(s.kept(r) for r, s in zip(ranks, spectra, strict=True)))
    return best


@pytest.mark.parametrize("equal_costs", [True, False])
def test_budget_against_brute_force(equal_costs: bool) -> None:
    rng = random.Random(0)
    for _ in range(150):
        spectra = []
        for j in range(3):
            values = sorted((rng.uniform(0.1, 3) for _ in range(rng.randint(1, 4))), reverse=True)
            shape = (4, 4) if equal_costs else (rng.randint(2, 6), rng.randint(2, 6))
            spectra.append(_spec(f"m{j}", values, shape))
        floor = sum(s.cost for s in spectra)
        budget = floor + rng.randint(0, 3 * floor)
        ranks, gap = budget_ranks(spectra, budget)
        got = sum(s.kept(ranks[s.module]) for s in spectra)
        assert sum(ranks[s.module] * s.cost for s in spectra) <= budget
        best = _brute(spectra, budget)
        assert got <= best + 1e-9
        assert got >= best - gap - 1e-9  # the stated bound holds
        if equal_costs:
            assert got == pytest.approx(best, abs=1e-9)  # exactly optimal
        if gap == 0.0:
            assert got == pytest.approx(best, abs=1e-9)


def test_budget_refuses_less_than_one_rank_per_module() -> None:
    spectra = [_spec("a", [1.0]), _spec("b", [1.0])]
    with pytest.raises(OptionError, match="smaller than one rank per module"):
        budget_ranks(spectra, 15)
    assert budget_ranks(spectra, 16)[0] == {"a": 1, "b": 1}


def test_plan_totals() -> None:
    spectra = [_spec("a", [2.0, 1.0]), _spec("b", [1.0, 1.0], (2, 6))]
    p = plan(spectra, {"a": 1, "b": 2})
    assert [m.params for m in p.modules] == [8, 16] and p.params == 24
    assert p.modules[0].energy_kept == pytest.approx(0.8)
    assert p.modules[0].relative_error == pytest.approx(0.2**0.5)
    assert p.energy_kept == pytest.approx((4 + 2) / 7)


def _lora_ranks(model: torch.nn.Module) -> dict[str, tuple[int, float]]:
    return {
        name: (m.r["default"], m.scaling["default"])
        for name, m in model.named_modules()
        if isinstance(m, LoraLayer)
    }


@pytest.mark.parametrize("head", [False, True])
def test_peft_applies_every_rank_exactly_despite_suffix_collisions(head: bool) -> None:
    """12 layers: encoder.layer.1.* is a textual suffix neighbour of encoder.layer.11.*."""

    config = tiny_bert_config(
        hidden_size=4, num_hidden_layers=12, intermediate_size=4, num_attention_heads=1
    )
    names = [n for n, m in BertModel(config).named_modules() if isinstance(m, torch.nn.Linear)]
    ranks = {n: 1 + i % 3 for i, n in enumerate(names)}  # 1, 2, 3, 1, ...
    raw = json.loads(json.dumps(lora_config_dict(ranks, alpha_ratio=2.0)))
    model = BertForSequenceClassification(config) if head else BertModel(config)
    peft_model = get_peft_model(model, LoraConfig(**raw))
    prefix = "base_model.model." + ("bert." if head else "")
    got = {k.removeprefix(prefix): v for k, v in _lora_ranks(peft_model).items()}
    assert got == {n: (r, 2.0) for n, r in ranks.items()}


def test_targets_that_are_suffixes_of_other_modules_are_refused() -> None:
    with pytest.raises(OptionError, match="ending of"):
        check_unique_targets(["b.c"], ["a.b.c", "b.c"])
    check_unique_targets(["x.layer.1.q"], ["x.layer.11.q", "x.layer.1.q"])


def test_cli_rank_writes_a_loadable_config(weights_pair: FullPair, tmp_path: Path, run_cli) -> None:
    out, table = tmp_path / "lora.json", tmp_path / "plan.json"
    r = run_cli("rank", weights_pair.tuned, "--base", weights_pair.base, "--energy", "0.9",
                "--max-rank", "6", "--out", out, "--json", table)  # fmt: skip
    assert r.code == 0, r.err
    assert "total:" in r.out and "energy kept" in r.out
    config = LoraConfig(**json.loads(out.read_text()))
    plan_json = json.loads(table.read_text())
    want = {m["module"]: m["rank"] for m in plan_json["modules"] if m["rank"] > 0}
    assert all(1 <= v <= 6 for v in want.values())
    peft_model = get_peft_model(tiny_bert(num_hidden_layers=1), config)
    got = {k.removeprefix("base_model.model."): v[0] for k, v in _lora_ranks(peft_model).items()}
    assert got == want
    budget = run_cli("rank", weights_pair.tuned, "--base", weights_pair.base, "--budget", "10",
                     "--out", tmp_path / "b.json")  # fmt: skip
    assert budget.code == 1 and "smaller than one rank per module" in budget.err
    assert not (tmp_path / "b.json").exists()
    neither = run_cli("rank", weights_pair.tuned, "--base", weights_pair.base, "--out", out)
    assert neither.code == 1 and "exactly one of" in neither.err


def test_rank_from_an_adapter_counts_its_true_rank(tmp_path: Path, run_cli) -> None:
    """A rank-6 LoRA whose B has only 2 independent columns has ΔW of rank 2."""
    peft_model = get_peft_model(
        tiny_bert(num_hidden_layers=1),
        LoraConfig(r=6, lora_alpha=6, target_modules=["query", "key"]),
    )
    randomize_lora(peft_model)
    with torch.no_grad():
        b = peft_model.base_model.model.get_submodule("encoder.layer.0.attention.self.key")
        weight = b.lora_B["default"].weight  # (16, 6)
        weight[:, 2:] = weight[:, :2] @ torch.randn(2, 4)
    peft_model.save_pretrained(str(tmp_path / "adapter"))
    out = tmp_path / "lora.json"
    r = run_cli("rank", tmp_path / "adapter", "--energy", "1.0", "--out", out)
    assert r.code == 0, r.err
    config = json.loads(out.read_text())
    assert config["r"] in (2, 6)
    ranks = {"encoder.layer.0.attention.self.query": 6, "encoder.layer.0.attention.self.key": 2}
    model = get_peft_model(tiny_bert(num_hidden_layers=1), LoraConfig(**config))
    got = {k.removeprefix("base_model.model."): v[0] for k, v in _lora_ranks(model).items()}
    assert got == ranks
