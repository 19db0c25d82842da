"""PeftLoraReader and the LoRA scaling rule against the real PEFT library.

Every ΔW is checked against PEFT itself: adapters are made with ``get_peft_model`` on tiny
models built here (no download), lora_B is randomized (it is zero at init), the adapter is
saved with ``save_pretrained``, and the oracle is ``merge_and_unload()``'s weight minus the base
weight, key for key.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.utils.other import get_pattern_key
from safetensors.torch import load_file, save_file
from torch import nn

from spectra.errors import AdapterConfigError, CheckpointMismatchError
from spectra.io import MissingTensorError, open_tensors
from spectra.loaders import LoadOptions
from spectra.loaders.lora_scaling import lora_scaling, pattern_value
from spectra.loaders.peft import PeftLoraReader
from tests.loaders.conftest import Toy, make_peft_adapter, randomize_adapter
from tests.models import tiny_bert

RTOL32 = 1e-5  # float32: PEFT merges in float32, spectra multiplies s into B first
RTOL64 = 1e-12


def _adapter(model: nn.Module, config: LoraConfig, out: Path) -> dict[str, torch.Tensor]:
    """Real PEFT adapter of ``model`` saved to ``out``; ΔW oracles by module (PEFT's merge)."""
    return make_peft_adapter(model, config, out).oracle


def _check(reader: PeftLoraReader, oracle: dict[str, torch.Tensor], rtol: float) -> None:
    assert sorted(m.module for m in reader.modules()) == sorted(oracle)
    for name, want in oracle.items():
        upd = reader.update(name)
        assert upd.factored
        want = want.reshape(want.shape[0], -1)  # conv kernels (out, in, kh, kw) → (out, in·kh·kw)
        got = upd.materialize()
        assert got.shape == want.shape == upd.shape, name
        assert got.dtype == reader._options.dtype
        err = (got - want.to(got.dtype)).norm() / want.norm()
        assert err < rtol, (name, float(err))


def _edit_config(adapter: Path, tmp_path: Path, **fields: object) -> Path:
    """A copy of ``adapter`` with fields of adapter_config.json replaced (None deletes)."""
    out = tmp_path / "edited"
    shutil.copytree(adapter, out)
    cfg = json.loads((out / "adapter_config.json").read_text())
    for k, v in fields.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (out / "adapter_config.json").write_text(json.dumps(cfg))
    return out


@pytest.fixture
def plain(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A plain LoRA (r=2, alpha=5) on two Linear layers."""
    config = LoraConfig(r=2, lora_alpha=5, target_modules=["lin1", "lin2"])
    oracle = _adapter(Toy(), config, tmp_path / "plain")
    return tmp_path / "plain", oracle


# --- the scaling rule and PEFT's pattern matching ---------------------------------------------


def test_lora_scaling_closed_form() -> None:
    assert lora_scaling(16, 8, use_rslora=False) == 2.0
    assert lora_scaling(16, 4, use_rslora=True) == 8.0
    assert lora_scaling(5, 3, use_rslora=True) == pytest.approx(5 / math.sqrt(3), rel=1e-15)
    with pytest.raises(ValueError):
        lora_scaling(16, 0, use_rslora=False)


@pytest.mark.parametrize(
    "pattern",
    [
        {"query": 1, "value": 2},
        {"layer.0.attention.self.query": 3, "query": 4},  # first match wins
        {"query": 4, "layer.0.attention.self.query": 3},
        {r"layer\.[01]\..*query": 5},  # a regex key
        {"uery": 6, "self.query": 7},  # a partial component never matches
        {"encoder.layer.0.attention.self.query": 8},  # the whole name
        {"attention": 9},  # an inner component alone does not match
    ],
)
@pytest.mark.parametrize(
    "module",
    [
        "encoder.layer.0.attention.self.query",
        "encoder.layer.1.attention.self.query",
        "query",
        "xquery",
    ],
)
def test_pattern_value_matches_peft(pattern: dict[str, int], module: str) -> None:
    want = pattern.get(get_pattern_key(list(pattern), module), -1)  # PEFT's own lookup
    assert pattern_value(module, pattern, -1) == want


def test_pattern_value_cases() -> None:
    # Closed-form expectations, independent of PEFT.
    assert pattern_value("a.b.query", {"query": 1}, 0) == 1
    assert pattern_value("a.b.xquery", {"query": 1}, 0) == 0
    assert pattern_value("a.b.query", {"b.query": 2, "query": 1}, 0) == 2
    assert pattern_value("a.b.query", {"a": 1}, 0) == 0


# --- ΔW against merge_and_unload ----------------------------------------------------------------


@pytest.mark.parametrize("given", ["dir", "adapter_model.safetensors", "adapter_config.json"])
def test_plain_lora_matches_merge(plain: tuple[Path, dict[str, torch.Tensor]], given: str) -> None:
    adapter, oracle = plain
    path = adapter if given == "dir" else adapter / given
    reader = PeftLoraReader(path)
    _check(reader, oracle, RTOL32)
    assert reader.kind == "lora"
    assert reader.config["r"] == 2 and reader.config["lora_alpha"] == 5.0
    info = {m.module: m for m in reader.modules()}
    assert info["lin1"].shape == (5, 6) and info["lin1"].rank == 2
    assert info["lin1"].scaling == "alpha/r = 5/2 = 2.5"
    upd = reader.update("lin2")
    assert upd.inner_rank == 2 and upd.left.shape == (7, 2) and upd.right.shape == (2, 5)


def test_bin_weights_file(tmp_path: Path) -> None:
    config = LoraConfig(r=3, lora_alpha=7, target_modules=["lin2"])
    base = {k: v.detach().clone() for k, v in Toy().state_dict().items()}
    model = Toy()
    model.load_state_dict(base)
    peft_model = get_peft_model(model, config)
    randomize_adapter(peft_model)
    peft_model.save_pretrained(str(tmp_path / "a"), safe_serialization=False)
    want = peft_model.merge_and_unload().state_dict()["lin2.weight"] - base["lin2.weight"]
    assert (tmp_path / "a" / "adapter_model.bin").is_file()
    reader = PeftLoraReader(tmp_path / "a" / "adapter_model.bin")
    assert torch.allclose(
        reader.update("lin2").materialize(), want, rtol=0, atol=1e-6 * want.abs().max()
    )


def test_float64_is_tighter(tmp_path: Path) -> None:
    config = LoraConfig(r=2, lora_alpha=5, target_modules=["lin1", "lin2"])
    oracle = _adapter(Toy().double(), config, tmp_path / "a")
    reader = PeftLoraReader(tmp_path / "a", options=LoadOptions(dtype=torch.float64))
    _check(reader, oracle, RTOL64)


def test_rslora(tmp_path: Path) -> None:
    config = LoraConfig(r=4, lora_alpha=6, use_rslora=True, target_modules=["lin1"])
    oracle = _adapter(Toy().double(), config, tmp_path / "a")
    reader = PeftLoraReader(tmp_path / "a", options=LoadOptions(dtype=torch.float64))
    _check(reader, oracle, RTOL64)
    (info,) = reader.modules()
    assert info.scaling == "alpha/sqrt(r) = 6/sqrt(4) = 3"
    # s = α/√r = 3, not α/r = 1.5: the scaling is folded into left = s·B.
    raw = load_file(str(tmp_path / "a" / "adapter_model.safetensors"))
    b = raw["base_model.model.lin1.lora_B.weight"]
    assert torch.allclose(reader.update("lin1").left, 3.0 * b, rtol=1e-15, atol=0)


def test_rank_and_alpha_patterns(tmp_path: Path) -> None:
    config = LoraConfig(
        r=2,
        lora_alpha=4,
        target_modules=["query", "value"],
        rank_pattern={"layer.0.attention.self.query": 5, "query": 3},
        alpha_pattern={"value": 12},
    )
    oracle = _adapter(tiny_bert(vocab_size=40, intermediate_size=24), config, tmp_path / "a")
    reader = PeftLoraReader(tmp_path / "a")
    _check(reader, oracle, RTOL32)
    ranks = {m.module: (m.rank, m.detail["alpha"]) for m in reader.modules()}
    assert ranks == {
        "encoder.layer.0.attention.self.query": (5, 4.0),  # first rank_pattern key
        "encoder.layer.1.attention.self.query": (3, 4.0),  # second key
        "encoder.layer.0.attention.self.value": (2, 12.0),  # default r, alpha_pattern
        "encoder.layer.1.attention.self.value": (2, 12.0),
    }


def _tiny_gpt2() -> nn.Module:
    from transformers import GPT2Config, GPT2Model

    return GPT2Model(GPT2Config(vocab_size=40, n_positions=16, n_embd=16, n_layer=2, n_head=2))


def test_fan_in_fan_out_conv1d(tmp_path: Path) -> None:
    model = _tiny_gpt2()
    base_sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(base_sd, str(tmp_path / "base.safetensors"))
    config = LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn"], fan_in_fan_out=True)
    oracle = _adapter(model, config, tmp_path / "a")
    assert oracle["h.0.attn.c_attn"].shape == (16, 48)  # Conv1D stores (in, out)
    base = open_tensors(tmp_path / "base.safetensors")
    reader = PeftLoraReader(tmp_path / "a", base=base)
    _check(reader, oracle, RTOL32)
    upd = reader.update("h.0.attn.c_attn")
    assert upd.shape == (16, 48) and upd.left.shape == (16, 2) and upd.right.shape == (2, 48)
    assert any("Conv1D" in n for n in upd.notes)
    # The same weights read with fan_in_fan_out: false give (48, 16), which the base refuses.
    edited = _edit_config(tmp_path / "a", tmp_path, fan_in_fan_out=False)
    with pytest.raises(CheckpointMismatchError, match="fan_in_fan_out: false"):
        PeftLoraReader(edited, base=base)


def test_embedding_lora(tmp_path: Path) -> None:
    config = LoraConfig(r=3, lora_alpha=6, target_modules=["emb"])
    oracle = _adapter(Toy().double(), config, tmp_path / "a")
    reader = PeftLoraReader(tmp_path / "a", options=LoadOptions(dtype=torch.float64))
    _check(reader, oracle, RTOL64)
    upd = reader.update("emb")
    assert upd.shape == (12, 6) and upd.left.shape == (12, 3)  # (num_embeddings, dim)
    assert reader.modules()[0].detail["layout"].startswith("nn.Embedding")


def test_conv_lora_flattened(tmp_path: Path) -> None:
    config = LoraConfig(r=2, lora_alpha=2, target_modules=["conv"])
    oracle = _adapter(Toy().double(), config, tmp_path / "a")
    reader = PeftLoraReader(tmp_path / "a", options=LoadOptions(dtype=torch.float64))
    _check(reader, oracle, RTOL64)  # oracle (4, 3, 3, 3) compared after flattening to (4, 27)
    assert reader.update("conv").shape == (4, 27)


@pytest.mark.filterwarnings("ignore:Adapter 'default'.*invalid shape")  # PEFT flags the 1-D bias
def test_lora_bias_is_reported_not_added(tmp_path: Path) -> None:
    config = LoraConfig(r=2, lora_alpha=4, target_modules=["lin1"], lora_bias=True)
    oracle = _adapter(Toy().double(), config, tmp_path / "a")
    raw = load_file(str(tmp_path / "a" / "adapter_model.safetensors"))
    assert "base_model.model.lin1.lora_B.bias" in raw
    reader = PeftLoraReader(tmp_path / "a", options=LoadOptions(dtype=torch.float64))
    _check(reader, oracle, RTOL64)  # the weight ΔW is unchanged by the bias
    assert any("lora_B.bias" in n for n in reader.update("lin1").notes)
    assert reader.modules()[0].detail["lora_B.bias"] is True


def test_base_names_with_prefix(
    plain: tuple[Path, dict[str, torch.Tensor]], tmp_path: Path
) -> None:
    adapter, oracle = plain
    base = {f"model.{k}": v.contiguous() for k, v in Toy().state_dict().items()}
    save_file(base, str(tmp_path / "base.safetensors"))
    reader = PeftLoraReader(adapter, base=open_tensors(tmp_path / "base.safetensors"))
    assert [m.module for m in reader.modules()] == ["model.lin1", "model.lin2"]
    assert reader.modules()[0].detail["adapter_module"] == "lin1"
    want = oracle["lin1"]
    got = reader.update("model.lin1").materialize()
    assert (got - want).norm() / want.norm() < RTOL32
    assert any("prefix" in n for n in reader.report.notes)


# --- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dropped", ["lora_B.weight", "lora_A.weight"])
def test_missing_half(plain: tuple[Path, dict[str, torch.Tensor]], dropped: str) -> None:
    adapter, _ = plain
    path = adapter / "adapter_model.safetensors"
    raw = load_file(str(path))
    del raw[f"base_model.model.lin2.{dropped}"]
    save_file(raw, str(path))
    with pytest.raises(AdapterConfigError, match=f"lin2.*no '{dropped}'") as e:
        PeftLoraReader(adapter)
    assert e.value.key == "lin2"


def test_rank_mismatch(plain: tuple[Path, dict[str, torch.Tensor]], tmp_path: Path) -> None:
    adapter, _ = plain
    edited = _edit_config(adapter, tmp_path, r=3)
    with pytest.raises(AdapterConfigError, match=r"rank 2 .* r = 3") as e:
        PeftLoraReader(edited)
    assert e.value.key == "lin1"


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({"r": 0}, "r"),
        ({"r": -2}, "r"),
        ({"r": "8"}, "r"),
        ({"lora_alpha": None}, "lora_alpha"),
        ({"lora_alpha": "sixteen"}, "lora_alpha"),
        ({"use_rslora": "yes"}, "use_rslora"),
        ({"rank_pattern": {"lin1": 0}}, "rank_pattern"),
        ({"alpha_pattern": {"(": 3}}, "alpha_pattern"),
    ],
)
def test_invalid_config_values(
    plain: tuple[Path, dict[str, torch.Tensor]], tmp_path: Path, fields: dict[str, object], key: str
) -> None:
    adapter, _ = plain
    edited = _edit_config(adapter, tmp_path, **fields)
    with pytest.raises(AdapterConfigError, match=key) as e:
        PeftLoraReader(edited)
    assert e.value.key == key or e.value.key.startswith(key)


def test_unknown_module(plain: tuple[Path, dict[str, torch.Tensor]]) -> None:
    reader = PeftLoraReader(plain[0])
    with pytest.raises(MissingTensorError, match="lin3"):
        reader.update("lin3")


def test_base_without_module(plain: tuple[Path, dict[str, torch.Tensor]], tmp_path: Path) -> None:
    save_file({"other.weight": torch.zeros(5, 6)}, str(tmp_path / "base.safetensors"))
    with pytest.raises(CheckpointMismatchError, match="no weight in the base"):
        PeftLoraReader(plain[0], base=open_tensors(tmp_path / "base.safetensors"))
