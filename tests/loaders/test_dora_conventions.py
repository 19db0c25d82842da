"""DoRA magnitudes in each convention files ship with, each checked against its own formula
written here in float64 (never through spectra's code), on square layers where the other axis
fits too and gives a different answer:

* PEFT ``lora_magnitude_vector`` (out,): m per output row (and PEFT's own merge as oracle);
* LyCORIS / OneTrainer ``dora_scale`` (1, in[, 1, 1]): m per input channel, ‖V‖ over the
  output channels and the kernel (their default);
* LyCORIS ``dora_scale`` (out, 1) (``wd_on_out``): m per output row;
* torchtune ``magnitude`` (out,) beside ``lora_a`` / ``lora_b``: m per output row.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig
from safetensors.torch import load_file, save_file
from torch import nn

from spectra.errors import AdapterConfigError, AmbiguousInputError
from spectra.io import open_tensors
from spectra.loaders import LoadOptions, open_checkpoint
from tests.loaders.conftest import make_peft_adapter, relative_error

F64 = LoadOptions(dtype=torch.float64)
N = 6  # square layers: (N, N), where m of length N fits either axis


def _rand(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _per_row(w0: torch.Tensor, inner: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """The paper's DoRA: W' = m ⊙ V / ‖V‖, one norm per output row of V = W0 + ΔW'."""
    v = w0 + inner
    return v * (m / v.norm(dim=1))[:, None] - w0


def _per_input(w0: torch.Tensor, inner: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """LyCORIS' default: one norm per input channel (dim 1), over every other dimension."""
    v = w0 + inner
    dims = [d for d in range(v.ndim) if d != 1]
    shape = [1, -1] + [1] * (v.ndim - 2)
    return v * (m / v.square().sum(dim=dims).sqrt()).reshape(shape) - w0


def _differs(a: torch.Tensor, b: torch.Tensor) -> bool:
    return relative_error(a, b) > 1e-2


class Square(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.sq = nn.Linear(N, N)


def test_peft_magnitude_is_per_output_row(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = LoraConfig(r=2, lora_alpha=3, target_modules=["sq"], use_dora=True)
    made = make_peft_adapter(Square().double(), cfg, tmp_path / "dora")
    base = open_tensors(made.base)
    got = open_checkpoint(made.adapter, base=base, options=F64).update("sq").dense
    weights = open_tensors(made.adapter / "adapter_model.safetensors")
    a = weights.get("base_model.model.sq.lora_A.weight").double()
    b = weights.get("base_model.model.sq.lora_B.weight").double()
    m = weights.get("base_model.model.sq.lora_magnitude_vector").double()
    w0 = base.get("sq.weight").double()
    want = _per_row(w0, 1.5 * b @ a, m)  # s = 3 / 2
    assert relative_error(got, want) < 1e-12
    assert relative_error(got, made.oracle["sq"]) < 1e-12  # PEFT's own merge agrees
    assert _differs(got, _per_input(w0, 1.5 * b @ a, m))  # the other axis is another answer


def _lycoris_file(
    tmp_path: Path, scale_shape: str, *, conv: bool = False, algo: str = "lora"
) -> tuple[Path, Path, torch.Tensor]:
    """A base with ``sq`` (N, N) or ``conv`` (4, 3, 3, 3), and a LyCORIS file for it; returns
    (base, adapter, float64 reference ΔW in the stored weight's shape)."""
    name, shape = ("conv", (4, 3, 3, 3)) if conv else ("sq", (N, N))
    w0 = _rand(*shape, seed=1)
    save_file(
        {f"{name}.weight": w0, "other.weight": _rand(5, 2, seed=9)}, tmp_path / "b.safetensors"
    )
    key = f"lora_unet_{name}"
    r, alpha = 2, 1.0
    tensors: dict[str, torch.Tensor] = {f"{key}.alpha": torch.tensor(alpha)}
    if algo == "lora":
        down = _rand(r, *shape[1:], seed=2)
        up = _rand(shape[0], r, *([1, 1] if conv else []), seed=3)
        tensors |= {f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up}
        inner = (up.reshape(shape[0], r) @ down.reshape(r, -1)).reshape(shape) * (alpha / r)
    else:  # LoHa: (w1_a w1_b) ⊙ (w2_a w2_b) · alpha / r
        w = {p: _rand(*s, seed=i) for i, (p, s) in
             enumerate({"hada_w1_a": (N, r), "hada_w1_b": (r, N), "hada_w2_a": (N, r),
                        "hada_w2_b": (r, N)}.items(), start=4)}  # fmt: skip
        tensors |= {f"{key}.{p}": t for p, t in w.items()}
        inner = (w["hada_w1_a"] @ w["hada_w1_b"]) * (w["hada_w2_a"] @ w["hada_w2_b"]) * alpha / r
    v = w0 + inner
    if scale_shape == "input":  # (1, in[, 1, 1]): near ‖V‖ per input channel, as trained
        dims = [d for d in range(v.ndim) if d != 1]
        jitter = 1 + 0.3 * _rand(1, shape[1], *[1] * (v.ndim - 2), seed=7)
        m = v.square().sum(dim=dims, keepdim=True).sqrt() * jitter
        want = _per_input(w0, inner, m.reshape(-1))
    else:  # (out, 1[, 1, 1])
        m = v.reshape(shape[0], -1).norm(dim=1).reshape(shape[0], *[1] * (v.ndim - 1))
        m = m * (1 + 0.3 * _rand(*m.shape, seed=7))
        want = _per_row(w0.reshape(shape[0], -1), inner.reshape(shape[0], -1), m.reshape(-1))
    tensors[f"{key}.dora_scale"] = m
    save_file(tensors, tmp_path / "lyco.safetensors")
    return tmp_path / "b.safetensors", tmp_path / "lyco.safetensors", want


@pytest.mark.parametrize(
    ("scale_shape", "conv", "algo"),
    [
        ("input", False, "lora"),
        ("output", False, "lora"),
        ("input", True, "lora"),
        ("output", True, "lora"),
        ("input", False, "loha"),
    ],  # fmt: skip
    ids=["lora-in", "lora-out", "conv-in", "conv-out", "loha-in"],
)
def test_dora_scale_axis_follows_its_stored_layout(
    tmp_path: Path, scale_shape: str, conv: bool, algo: str
) -> None:
    base, adapter, want = _lycoris_file(tmp_path, scale_shape, conv=conv, algo=algo)
    reader = open_checkpoint(adapter, base=open_tensors(base), options=F64)
    name = "conv" if conv else "sq"
    (info,) = reader.modules()
    assert info.module == name and info.rank is None
    assert scale_shape in info.detail["weight_decomposition"]
    got = reader.update(name).dense
    assert relative_error(got, want) < 1e-12


def test_square_dora_scale_layouts_give_different_answers(tmp_path: Path) -> None:
    """The same numbers stored (1, N) and (N, 1): two conventions, two different ΔW."""
    base, adapter, _ = _lycoris_file(tmp_path, "input")
    tensors = load_file(adapter)
    as_input = open_checkpoint(adapter, base=open_tensors(base), options=F64).update("sq").dense
    tensors["lora_unet_sq.dora_scale"] = tensors["lora_unet_sq.dora_scale"].reshape(N, 1)
    save_file(tensors, tmp_path / "out.safetensors")
    reader = open_checkpoint(tmp_path / "out.safetensors", base=open_tensors(base), options=F64)
    as_output = reader.update("sq").dense
    assert _differs(as_input, as_output)
    w0 = open_tensors(base).get("sq.weight")
    down = tensors["lora_unet_sq.lora_down.weight"]
    up = tensors["lora_unet_sq.lora_up.weight"]
    m = tensors["lora_unet_sq.dora_scale"].reshape(-1)
    assert relative_error(as_output, _per_row(w0, up @ down / 2, m)) < 1e-12


def test_dora_scale_needs_the_base_for_its_delta(tmp_path: Path) -> None:
    _, adapter, _ = _lycoris_file(tmp_path, "input")
    reader = open_checkpoint(adapter, options=F64)
    (info,) = reader.modules()
    assert "needs BASE" in info.detail["weight_decomposition"]
    with pytest.raises(AmbiguousInputError, match="needs BASE"):
        reader.update(info.module)


def test_a_dora_scale_in_neither_layout_is_refused(tmp_path: Path) -> None:
    tensors = {"lora_unet_x.lora_down.weight": _rand(2, 4, seed=1),
               "lora_unet_x.lora_up.weight": _rand(3, 2, seed=2),
               "lora_unet_x.dora_scale": _rand(2, 2, seed=3)}  # fmt: skip
    save_file(tensors, tmp_path / "k.safetensors")
    with pytest.raises(AdapterConfigError, match=r"\(1, in\[, 1, 1\]\)") as e:
        open_checkpoint(tmp_path / "k.safetensors")
    assert e.value.key == "lora_unet_x.dora_scale"


def _torchtune_file(tmp_path: Path, *, drop_magnitude: str | None = None) -> Path:
    """torchtune's adapter layout: ``<m>.lora_a.weight`` (r, in), ``<m>.lora_b.weight``
    (out, r), ``<m>.magnitude`` (out,); torchtune stores no alpha (its config does)."""
    tensors = {}
    for i, m in enumerate(("layers.0.q_proj", "layers.0.v_proj")):
        tensors |= {
            f"{m}.lora_a.weight": _rand(2, N, seed=10 + i).float(),
            f"{m}.lora_b.weight": _rand(N, 2, seed=20 + i).float(),
            f"{m}.magnitude": _rand(N, seed=30 + i).abs().float() + 1,
        }
    tensors.pop(drop_magnitude or "", None)
    torch.save(tensors, tmp_path / "adapter_0.pt")
    return tmp_path / "adapter_0.pt"


def test_torchtune_magnitude_is_per_output_row(tmp_path: Path) -> None:
    adapter = _torchtune_file(tmp_path)
    weights = torch.load(adapter, weights_only=True)
    base_sd = {f"layers.0.{p}.weight": _rand(N, N, seed=40 + i).float()
               for i, p in enumerate(("q_proj", "v_proj"))}  # fmt: skip
    save_file(base_sd, tmp_path / "base.safetensors")
    options = LoadOptions(dtype=torch.float64, lora_alpha=4.0)
    reader = open_checkpoint(
        adapter, base=open_tensors(tmp_path / "base.safetensors"), options=options
    )
    assert reader.kind == "dora"
    for m in ("layers.0.q_proj", "layers.0.v_proj"):
        a = weights[f"{m}.lora_a.weight"].double()
        b = weights[f"{m}.lora_b.weight"].double()
        mag = weights[f"{m}.magnitude"].double()
        w0 = base_sd[f"{m}.weight"].double()
        got = reader.update(m).dense
        assert relative_error(got, _per_row(w0, 2.0 * b @ a, mag)) < 1e-12  # s = 4 / 2
        assert _differs(got, _per_input(w0, 2.0 * b @ a, mag))


def test_a_magnitude_missing_on_one_module_is_refused(tmp_path: Path) -> None:
    adapter = _torchtune_file(tmp_path, drop_magnitude="layers.0.v_proj.magnitude")
    with pytest.raises(AdapterConfigError, match="other modules of this file do") as e:
        open_checkpoint(adapter, options=LoadOptions(lora_alpha=4.0))
    assert e.value.key == "layers.0.v_proj"


def test_a_model_parameter_named_magnitude_is_no_dora(tmp_path: Path) -> None:
    tensors = {"enc.lora_A.weight": _rand(2, N, seed=1), "enc.lora_B.weight": _rand(N, 2, seed=2),
               "norm.magnitude": _rand(N, seed=3)}  # fmt: skip
    save_file(tensors, tmp_path / "lora.safetensors")
    reader = open_checkpoint(tmp_path / "lora.safetensors", options=LoadOptions(lora_alpha=2.0))
    assert reader.kind == "lora"
    assert [m.module for m in reader.modules()] == ["enc"]
    assert reader.report.skipped_1d == ["norm.magnitude"]
