"""LoRA saved as a plain state dict (torch file or safetensors, no adapter_config.json):
PEFT-state-dict keys with α in the metadata (write_lora_state_dict), raw PeftModel state dicts,
loralib files, and the README's `spectra compare base.pt lora.pt multilora.pt`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file

from spectra.engine.svd import spectrum
from spectra.errors import AdapterConfigError, AmbiguousInputError
from spectra.io import open_tensors
from spectra.loaders import LoadOptions, detect_kind, open_checkpoint, write_lora_state_dict
from spectra.loaders.plain_lora import PlainLoraReader
from tests.loaders.conftest import Toy, make_peft_adapter, randomize_adapter, relative_error
from tests.models import tiny_bert

F64 = LoadOptions(dtype=torch.float64)
TARGETS = ["lin1", "lin2", "emb", "conv"]


@pytest.fixture
def peft_made(tmp_path: Path):
    """A PEFT LoRA on every layer kind of Toy (float64), saved; oracle = PEFT's merge."""
    cfg = LoraConfig(r=2, lora_alpha=5, target_modules=TARGETS)
    return make_peft_adapter(Toy().double(), cfg, tmp_path / "peft")


def _peft_tensors(made) -> dict[str, torch.Tensor]:
    """The adapter's tensors as PEFT saved them (``base_model.model.<m>.lora_A.weight``)."""
    source = open_tensors(made.adapter / "adapter_model.safetensors")
    keys = source.keys()  # TensorSource is not iterable
    return {k: source.get(k) for k in keys}


@pytest.mark.parametrize("suffix", [".pt", ".safetensors", ".bin"])
def test_written_state_dict_matches_peft_merge(peft_made, tmp_path: Path, suffix: str) -> None:
    path = write_lora_state_dict(
        tmp_path / f"lora{suffix}", _peft_tensors(peft_made), lora_alpha=5, r=2
    )
    assert detect_kind(path) == "lora"
    reader = open_checkpoint(path, options=F64)
    assert isinstance(reader, PlainLoraReader) and reader.kind == "lora"
    assert reader.config["lora_alpha"] == 5 and reader.config["scaling_from"] == "file metadata"
    assert sorted(i.module for i in reader.modules()) == sorted(peft_made.oracle)
    for name, want in peft_made.oracle.items():
        upd = reader.update(name)
        assert upd.factored and relative_error(upd.materialize(), want) < 1e-12, name


def test_raw_peft_model_state_dict_with_alpha_option(tmp_path: Path) -> None:
    # torch.save(peft_model.state_dict()): adapter names kept, base weights beside the factors.
    model = Toy().double()
    base_sd = {k: v.clone() for k, v in model.state_dict().items()}
    peft_model = get_peft_model(
        model, LoraConfig(r=3, lora_alpha=6, target_modules=["lin1", "emb"])
    )
    randomize_adapter(peft_model)
    torch.save(peft_model.state_dict(), tmp_path / "raw.pt")
    merged = peft_model.merge_and_unload().state_dict()
    reader = open_checkpoint(
        tmp_path / "raw.pt", options=LoadOptions(dtype=torch.float64, lora_alpha=6)
    )
    assert reader.config["scaling_from"] == "--lora-alpha"
    assert any("adapter 'default'" in n for n in reader.report.notes)
    for name in ("lin1", "emb"):
        want = merged[f"{name}.weight"] - base_sd[f"{name}.weight"]
        assert relative_error(reader.update(name).materialize(), want) < 1e-12


def test_loralib_closed_form_spectrum(tmp_path: Path) -> None:
    # loralib: ΔW = (lora_alpha / r) · B A. B = U diag(σ), A = Vᵀ (orthonormal U, V), α/r = 2:
    # the singular values of ΔW are exactly 2σ.
    g = torch.Generator().manual_seed(3)
    u, _ = torch.linalg.qr(torch.randn(7, 3, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(5, 3, generator=g, dtype=torch.float64))
    sigma = torch.tensor([3.0, 1.0, 0.25], dtype=torch.float64)
    sd = {
        "layer.weight": torch.randn(7, 5, generator=g, dtype=torch.float64),  # base, not ΔW
        "layer.bias": torch.zeros(7, dtype=torch.float64),
        "layer.lora_A": v.T.contiguous(),  # (r, in)
        "layer.lora_B": (u * sigma).contiguous(),  # (out, r)
    }
    torch.save(sd, tmp_path / "loralib.pt")
    reader = open_checkpoint(
        tmp_path / "loralib.pt", options=LoadOptions(dtype=torch.float64, lora_alpha=6)
    )
    (info,) = reader.modules()
    assert (info.module, info.shape, info.rank) == ("layer", (7, 5), 3)
    spec = spectrum(reader.update("layer"))
    assert torch.allclose(spec.values, 2 * sigma, atol=1e-12)
    assert spec.structural_zeros == 2
    assert any("not analysed" in n for n in reader.report.notes)  # layer.weight named


def test_lora_scale_option_is_one_s_for_every_module(peft_made, tmp_path: Path) -> None:
    save_file(_peft_tensors(peft_made), str(tmp_path / "a.safetensors"))
    reader = open_checkpoint(
        tmp_path / "a.safetensors", options=LoadOptions(dtype=torch.float64, lora_scale=2.5)
    )
    assert reader.modules()[0].scaling == "s = 2.5 (--lora-scale)"
    want = peft_made.oracle["lin1"]  # PEFT's s = 5/2 = 2.5 too
    assert relative_error(reader.update("lin1").materialize(), want) < 1e-12


def test_no_alpha_anywhere_names_the_options(peft_made, tmp_path: Path) -> None:
    save_file(_peft_tensors(peft_made), str(tmp_path / "a.safetensors"))
    with pytest.raises(AmbiguousInputError, match=r"--lora-alpha ALPHA .* --lora-scale S") as e:
        open_checkpoint(tmp_path / "a.safetensors")
    assert e.value.path == str(tmp_path / "a.safetensors")


def test_metadata_wins_over_option_and_says_so(peft_made, tmp_path: Path) -> None:
    path = write_lora_state_dict(tmp_path / "l.pt", _peft_tensors(peft_made), lora_alpha=5)
    reader = open_checkpoint(path, options=LoadOptions(lora_alpha=99))
    assert reader.modules()[0].scaling == "alpha/r = 5/2 = 2.5"
    assert any("--lora-alpha 99 not used" in n for n in reader.report.notes)


def test_rslora_and_rank_pattern_from_adapter_config_metadata(tmp_path: Path) -> None:
    cfg = LoraConfig(r=2, lora_alpha=4, target_modules=["lin1", "lin2"], use_rslora=True,
                     rank_pattern={"lin2": 3})  # fmt: skip
    made = make_peft_adapter(Toy().double(), cfg, tmp_path / "p")
    meta = {"adapter_config": (made.adapter / "adapter_config.json").read_text()}
    save_file(_peft_tensors(made), str(tmp_path / "a.safetensors"), metadata=meta)
    reader = open_checkpoint(tmp_path / "a.safetensors", options=F64)
    assert reader.config["scaling_from"] == "adapter_config metadata"
    for name, want in made.oracle.items():
        assert relative_error(reader.update(name).materialize(), want) < 1e-12
    assert {i.module: i.rank for i in reader.modules()} == {"lin1": 2, "lin2": 3}


def test_dora_in_adapter_config_metadata(tmp_path: Path) -> None:
    cfg = LoraConfig(r=2, lora_alpha=3, target_modules=["lin1"], use_dora=True)
    made = make_peft_adapter(Toy().double(), cfg, tmp_path / "p")
    meta = {"adapter_config": (made.adapter / "adapter_config.json").read_text()}
    save_file(_peft_tensors(made), str(tmp_path / "d.safetensors"), metadata=meta)
    reader = open_checkpoint(tmp_path / "d.safetensors", base=open_tensors(made.base), options=F64)
    assert reader.kind == "dora"
    assert relative_error(reader.update("lin1").dense, made.oracle["lin1"]) < 1e-12


def test_metadata_rank_disagreeing_with_factors_is_refused(peft_made, tmp_path: Path) -> None:
    tensors = _peft_tensors(peft_made)
    save_file(tensors, str(tmp_path / "a.safetensors"), metadata={"lora_alpha": "5", "r": "4"})
    with pytest.raises(AdapterConfigError, match=r"rank 2 but the field 'r' of the file metadata"):
        open_checkpoint(tmp_path / "a.safetensors")


@pytest.mark.parametrize(
    ("meta", "match"),
    [
        ({"lora_alpha": "x"}, "must be a number"),
        ({"r": "2"}, "no 'lora_alpha'"),
        ({"lora_alpha": "4", "use_rslora": "yes"}, "'true' or 'false'"),
        ({"lora_alpha": "4", "adapter_config": "{}"}, "both"),
        ({"adapter_config": "not json"}, "not JSON"),
    ],
)
def test_bad_metadata_is_refused(peft_made, tmp_path: Path, meta: dict, match: str) -> None:
    save_file(_peft_tensors(peft_made), str(tmp_path / "a.safetensors"), metadata=meta)
    with pytest.raises(AdapterConfigError, match=match):
        open_checkpoint(tmp_path / "a.safetensors")


def test_writer_refusals(tmp_path: Path) -> None:
    a = {"m.lora_A.weight": torch.zeros(2, 3), "m.lora_B.weight": torch.zeros(4, 2)}
    with pytest.raises(ValueError, match="not r = 3"):
        write_lora_state_dict(tmp_path / "a.pt", a, lora_alpha=1, r=3)
    with pytest.raises(ValueError, match="no LoRA factor"):
        write_lora_state_dict(tmp_path / "a.pt", {"w": torch.zeros(2, 2)}, lora_alpha=1)
    with pytest.raises(ValueError, match=r"\.safetensors, \.pt"):
        write_lora_state_dict(tmp_path / "a.npz", a, lora_alpha=1)
    with pytest.raises(ValueError, match="finite"):
        write_lora_state_dict(tmp_path / "a.pt", a, lora_alpha=math.nan)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_two_adapters_in_one_state_dict_are_refused(tmp_path: Path) -> None:
    sd = {
        "m.lora_A.one.weight": torch.zeros(2, 3), "m.lora_B.one.weight": torch.zeros(4, 2),
        "m.lora_A.two.weight": torch.zeros(2, 3), "m.lora_B.two.weight": torch.zeros(4, 2),
    }  # fmt: skip
    torch.save(sd, tmp_path / "two.pt")
    with pytest.raises(AdapterConfigError, match="several adapters"):
        open_checkpoint(tmp_path / "two.pt", options=LoadOptions(lora_alpha=1))


# --- the README example, verbatim -----------------------------------------------------------


def _tiny_bert():
    torch.manual_seed(0)
    return tiny_bert(vocab_size=40, num_hidden_layers=1, max_position_embeddings=8, pooling=False)


def test_readme_compare_torch_files_verbatim(tmp_path: Path, run_cli, monkeypatch) -> None:
    """`spectra compare base.pt lora.pt multilora.pt`, on files written the demo's way."""
    from spectra.multilora import MultiLoRAConfig, inject_multilora, save_multilora

    base = _tiny_bert()
    torch.save({k: v.clone() for k, v in base.state_dict().items()}, tmp_path / "base.pt")
    peft_model = get_peft_model(
        _tiny_bert(), LoraConfig(r=2, lora_alpha=4, target_modules=["query", "value"])
    )
    randomize_adapter(peft_model)
    write_lora_state_dict(
        tmp_path / "lora.pt", get_peft_model_state_dict(peft_model), lora_alpha=4, r=2
    )
    ml_cfg = MultiLoRAConfig(r=2, n=2, lora_alpha=4, target_modules=("query", "value"))
    ml_model = _tiny_bert()
    inject_multilora(ml_model, ml_cfg)
    randomize_adapter(ml_model, seed=2)
    save_multilora(ml_model, tmp_path / "multilora.pt", ml_cfg)

    monkeypatch.chdir(tmp_path)
    res = run_cli("compare", "base.pt", "lora.pt", "multilora.pt", "--json", "r.json", "-q")
    assert res.code == 0, res.err
    result = json.loads((tmp_path / "r.json").read_text())
    kinds = {s["label"]: (s["kind"], s["modules"]) for s in result["summary"]}
    assert kinds == {"lora": ("lora", 2), "multilora": ("multilora", 2)}
    # lora.pt's ΔW is PEFT's own merge (the metadata gave α): top-1 energy from the oracle.
    merged = peft_model.merge_and_unload().state_dict()
    key = "encoder.layer.0.attention.self.query.weight"
    want = torch.linalg.svdvals((merged[key] - base.state_dict()[key]).double())
    row = next(m for m in result["modules"] if m["label"] == "lora" and m["module"] in key)
    assert math.isclose(
        row["metrics"]["top1_energy"], float(want[0] ** 2 / (want**2).sum()), rel_tol=1e-4
    )
