"""spectra verify: real PEFT merges verify ok; broken merges get the right verdict and exit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file

from spectra.decide.verify import check_module, verify
from spectra.errors import CheckpointMismatchError
from spectra.multilora import MultiLoRAConfig, inject_multilora, merge_multilora, save_multilora
from tests.decide.conftest import randomize_lora
from tests.models import tiny_bert

QUERY = "encoder.layer.0.attention.self.query"


def _merged_case(root: Path, dtype: torch.dtype, *, dora: bool = False) -> tuple[Path, Path, Path]:
    """BASE dir, ADAPTER dir, MERGED dir: all written by transformers / PEFT."""
    torch.manual_seed(0)
    model = tiny_bert(num_hidden_layers=1).to(dtype)
    model.save_pretrained(root / "base")
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], use_dora=dora)
    peft_model = get_peft_model(model, config)
    randomize_lora(peft_model)
    peft_model.save_pretrained(str(root / "adapter"))
    peft_model.merge_and_unload().save_pretrained(root / "merged")
    return root / "base", root / "adapter", root / "merged"


@pytest.mark.parametrize(
    ("dtype", "dora"), [(torch.float32, False), (torch.bfloat16, False), (torch.float32, True)]
)
def test_real_peft_merges_verify_ok(tmp_path: Path, dtype: torch.dtype, dora: bool) -> None:
    base, adapter, merged = _merged_case(tmp_path, dtype, dora=dora)
    result = verify(base, adapter, merged)
    assert [c.verdict for c in result.adapter] == ["ok", "ok"]
    assert all(c.scale == pytest.approx(1.0, abs=0.02) for c in result.adapter)
    assert all(c.verdict == "unchanged" for c in result.outside)


def _broken(merged: Path, base: Path, out: Path, how: str) -> Path:
    """MERGED with the query module rewritten: half ΔW, W0 (not applied), or ΔW + noise."""

    sd = load_file(str(merged / "model.safetensors"))
    w0 = load_file(str(base / "model.safetensors"))[f"{QUERY}.weight"]
    delta = sd[f"{QUERY}.weight"] - w0
    if how == "half":
        sd[f"{QUERY}.weight"] = w0 + 0.5 * delta
    elif how == "missing":
        sd[f"{QUERY}.weight"] = w0.clone()
    else:
        g = torch.Generator().manual_seed(3)
        sd[f"{QUERY}.weight"] = sd[f"{QUERY}.weight"] + 0.2 * delta.std() * torch.randn(
            delta.shape, generator=g
        )
    out.mkdir()
    save_file(sd, str(out / "model.safetensors"))
    return out


@pytest.mark.parametrize(
    ("how", "verdict"),
    [("half", "scale_mismatch"), ("missing", "not_applied"), ("noise", "other_change")],
)
def test_broken_merges_get_their_verdict_and_exit_code(
    tmp_path: Path, run_cli, how: str, verdict: str
) -> None:
    base, adapter, merged = _merged_case(tmp_path, torch.float32)
    bad = _broken(merged, base, tmp_path / "bad", how)
    result = verify(base, adapter, bad)
    by_name = {c.module: c for c in result.adapter}
    assert by_name[QUERY].verdict == verdict
    assert by_name["encoder.layer.0.attention.self.value"].verdict == "ok"
    if how == "half":
        assert by_name[QUERY].scale == pytest.approx(0.5, abs=1e-5)
    r = run_cli("verify", base, adapter, bad)
    assert r.code == 3 and verdict in r.out
    assert run_cli("verify", base, adapter, bad, "--fail-on", "none").code == 0
    assert run_cli("verify", base, adapter, merged).code == 0


def test_half_scale_in_bf16_is_still_told_apart(tmp_path: Path) -> None:
    base, adapter, merged = _merged_case(tmp_path, torch.bfloat16)
    result = verify(base, adapter, _broken(merged, base, tmp_path / "bad", "half"))
    assert {c.module: c.verdict for c in result.adapter}[QUERY] == "scale_mismatch"


def test_check_module_closed_forms() -> None:
    g = torch.Generator().manual_seed(0)
    delta = torch.randn(6, 5, generator=g, dtype=torch.float64)
    assert check_module(delta, delta, 10.0, 1e-7).verdict == "ok"
    c = check_module(delta, 3 * delta, 10.0, 1e-7)
    assert (c.verdict, c.scale) == ("scale_mismatch", pytest.approx(3.0))
    assert check_module(delta, 0 * delta, 10.0, 1e-7).verdict == "not_applied"
    orth = torch.zeros(6, 5, dtype=torch.float64)
    orth[0, 0] = 1.0
    d = delta.clone()
    d[0, 0] = 0.0
    assert check_module(d, orth, 10.0, 1e-7).scale == 0.0  # ⟨D, ΔW⟩ = 0


def test_merged_of_another_shape_is_refused(tmp_path: Path, run_cli) -> None:
    base, adapter, _ = _merged_case(tmp_path, torch.float32)
    other = tiny_bert(num_hidden_layers=1, hidden_size=8, intermediate_size=16)
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(CheckpointMismatchError, match="shape"):
        verify(base, adapter, tmp_path / "other")
    r = run_cli("verify", base, adapter, tmp_path / "other")
    assert r.code == 1 and r.err.count("\n") == 1


def test_multilora_merge_verifies_ok(tmp_path: Path) -> None:
    net = torch.nn.Sequential(torch.nn.Linear(12, 20), torch.nn.Linear(20, 12))
    save_file(
        {k: v.clone() for k, v in net.state_dict().items()}, str(tmp_path / "base.safetensors")
    )
    config = MultiLoRAConfig(r=2, n=2, lora_alpha=4, target_modules=("0", "1"))
    inject_multilora(net, config)
    randomize_lora(net, seed=1, scale=1.0, marker="multilora", dtype=torch.float32)
    adapter = save_multilora(net, tmp_path / "ml.safetensors", config)
    merge_multilora(net)
    merged = {
        k.replace(".base_layer", ""): v.clone()
        for k, v in net.state_dict().items()
        if "multilora" not in k
    }
    save_file(merged, str(tmp_path / "merged.safetensors"))
    result = verify(tmp_path / "base.safetensors", adapter, tmp_path / "merged.safetensors")
    assert [(c.module, c.verdict) for c in result.adapter] == [("0", "ok"), ("1", "ok")]


MODULES = [f"encoder.layer.{i}.attention.self.{t}" for i in range(2) for t in ("query", "value")]


def _lycoris_deltas(adapters, kind: str) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    """ΔW per module in float64 from the stored factors (the independent answer)."""

    if kind == "kohya":
        return {m: adapters.delta[("kohya", "lora_te_" + m.replace(".", "_"))] for m in MODULES}
    sd = load_file(str(adapters.loha))
    out = {}
    for m in MODULES:  # LoHa: (w1_a w1_b) ⊙ (w2_a w2_b) · α/r, α = r when not stored
        k = "lora_te_" + m.replace(".", "_")
        w1 = sd[f"{k}.hada_w1_a"].double() @ sd[f"{k}.hada_w1_b"].double()
        w2 = sd[f"{k}.hada_w2_a"].double() @ sd[f"{k}.hada_w2_b"].double()
        out[m] = w1 * w2
    return out


@pytest.mark.parametrize("kind", ["kohya", "loha"])
def test_kohya_and_lycoris_merges_verify(adapters, ckpts, tmp_path: Path, kind: str) -> None:  # type: ignore[no-untyped-def]
    """MERGED = W0 + ΔW verifies ok; W0 + ΔW/2 is a scale mismatch."""
    base = load_file(str(ckpts.base))
    adapter = adapters.kohya if kind == "kohya" else adapters.loha
    deltas = _lycoris_deltas(adapters, kind)
    for scale, verdict in ((1.0, "ok"), (0.5, "scale_mismatch")):
        merged = dict(base)
        for m, d in deltas.items():
            merged[f"{m}.weight"] = (base[f"{m}.weight"].double() + scale * d).float()
        out = tmp_path / f"merged_{scale}.safetensors"
        save_file(merged, str(out))
        result = verify(ckpts.base, adapter, out)
        assert [c.module for c in result.adapter] == sorted(MODULES)
        assert {c.verdict for c in result.adapter} == {verdict}


def test_cli_json_and_fail_on_changed(tmp_path: Path, run_cli) -> None:
    import json

    base, adapter, merged = _merged_case(tmp_path, torch.float32)
    sd = load_file(str(merged / "model.safetensors"))
    sd["embeddings.LayerNorm.weight"] = sd["embeddings.LayerNorm.weight"] + 1.0
    (tmp_path / "m2").mkdir()
    save_file(sd, str(tmp_path / "m2" / "model.safetensors"))
    out = tmp_path / "v.json"
    r = run_cli("verify", base, adapter, tmp_path / "m2", "--json", out)
    assert r.code == 0 and "1 changed" in r.out
    data = json.loads(out.read_text())
    assert {c["verdict"] for c in data["adapter"]} == {"ok"}
    assert [c["module"] for c in data["outside"] if c["verdict"] == "changed"] == [
        "embeddings.LayerNorm.weight"
    ]
    assert run_cli("verify", base, adapter, tmp_path / "m2", "--fail-on", "changed").code == 3
    bad = run_cli("verify", base, adapter, merged, "--fail-on", "broken")
    assert bad.code == 1 and "unknown verdict" in bad.err
