"""MultiLoRAReader: ΔW against (α/r) Σ_i diag(s_i) B_i A_i written out in float64, the files
written by spectra.multilora.format.write_multilora (safetensors and torch)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from spectra.errors import (
    AdapterConfigError,
    CheckpointMismatchError,
    FileFormatError,
    UnsupportedFormatError,
)
from spectra.io import open_tensors
from spectra.loaders import LoadOptions
from spectra.loaders.multilora import MultiLoRAReader
from spectra.multilora import MultiLoRAConfig, inject_multilora, merge_multilora, save_multilora
from spectra.multilora.format import MultiLoRAFileConfig, file_metadata, write_multilora
from tests.loaders.conftest import randomize_adapter

N, R, ALPHA = 3, 2, 6.0
SHAPES = {"enc.0.query": (5, 7), "enc.0.value": (4, 7)}  # module → (out, in)


def _tensors(
    scaling: str, dtype: torch.dtype = torch.float32, seed: int = 0
) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for m, (o, i) in SHAPES.items():
        out[f"{m}.multilora_A"] = torch.randn(N, R, i, generator=g).to(dtype)
        out[f"{m}.multilora_B"] = torch.randn(N, o, R, generator=g).to(dtype)
        s_shape = (N, o) if scaling == "vector" else (N,)
        out[f"{m}.multilora_scaling"] = torch.randn(s_shape, generator=g).to(dtype)
    return out


def _reference(
    t: dict[str, torch.Tensor], module: str, alpha: float = ALPHA, r: int = R
) -> torch.Tensor:
    """(α/r) Σ_i diag(s_i) B_i A_i in float64, one parallel module at a time."""
    a = t[f"{module}.multilora_A"].double()
    b = t[f"{module}.multilora_B"].double()
    s = t[f"{module}.multilora_scaling"].double()
    delta = torch.zeros(b.shape[1], a.shape[2], dtype=torch.float64)
    for i in range(a.shape[0]):
        d_i = torch.diag(s[i]) if s.ndim == 2 else s[i] * torch.eye(b.shape[1], dtype=torch.float64)
        delta += (alpha / r) * d_i @ b[i] @ a[i]
    return delta


def _config(scaling: str = "vector") -> MultiLoRAFileConfig:
    return MultiLoRAFileConfig(r=R, n=N, lora_alpha=ALPHA, scaling=scaling)  # type: ignore[arg-type]


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
@pytest.mark.parametrize("scaling", ["vector", "scalar"])
def test_delta_matches_formula(tmp_path: Path, suffix: str, scaling: str) -> None:
    t = _tensors(scaling)
    path = write_multilora(tmp_path / f"m{suffix}", t, _config(scaling))
    for dtype, rtol in ((torch.float64, 1e-13), (torch.float32, 1e-6)):
        reader = MultiLoRAReader(path, options=LoadOptions(dtype=dtype))
        assert reader.kind == "multilora"
        assert [m.module for m in reader.modules()] == sorted(SHAPES)
        for m, (o, i) in SHAPES.items():
            upd = reader.update(m)
            assert (
                upd.shape == (o, i)
                and upd.left.shape == (o, N * R)
                and upd.right.shape == (N * R, i)
            )
            assert upd.groups == (R,) * N and upd.left.dtype == dtype
            assert torch.equal(upd.scaling, t[f"{m}.multilora_scaling"].to(dtype))
            want = _reference(t, m)
            err = (upd.materialize().double() - want).norm() / want.norm()
            assert err < rtol, (m, dtype, float(err))


def test_group_i_is_module_i(tmp_path: Path) -> None:
    """Columns o_i:o_i+r of left and rows of right rebuild (α/r) diag(s_i) B_i A_i alone."""
    t = _tensors("vector")
    path = write_multilora(tmp_path / "m.safetensors", t, _config())
    upd = MultiLoRAReader(path, options=LoadOptions(dtype=torch.float64)).update("enc.0.query")
    a, b, s = (t[f"enc.0.query.multilora_{k}"].double() for k in ("A", "B", "scaling"))
    for i in range(N):
        block = upd.left[:, i * R : (i + 1) * R] @ upd.right[i * R : (i + 1) * R]
        want = (ALPHA / R) * torch.diag(s[i]) @ b[i] @ a[i]
        assert torch.allclose(block, want, rtol=1e-13, atol=1e-13)


def test_widened_before_scaling(tmp_path: Path) -> None:
    """bf16 factors: the float64 result equals the formula on the exact stored bf16 values."""
    t = _tensors("vector", dtype=torch.bfloat16)
    path = write_multilora(tmp_path / "m.safetensors", t, _config())
    upd = MultiLoRAReader(path, options=LoadOptions(dtype=torch.float64)).update("enc.0.value")
    want = _reference(t, "enc.0.value")
    assert (upd.materialize() - want).norm() / want.norm() < 1e-13
    info = MultiLoRAReader(path).modules()[0]
    assert info.detail == {"n": N, "r": R, "scaling": "vector", "stored_dtype": "bfloat16"}
    assert info.rank == N * R and info.scaling.startswith("alpha/r = 6/2 = 3")


def test_reference_layer_round_trip(tmp_path: Path) -> None:
    """The reference layer's own save + merge agree with the reader (a second, independent oracle)."""
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4)).double()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    config = MultiLoRAConfig(r=2, n=2, lora_alpha=4.0, target_modules=("0", "2"))
    inject_multilora(model, config)
    randomize_adapter(model, seed=3)
    save_multilora(model, tmp_path / "m.safetensors", config)
    reader = MultiLoRAReader(tmp_path / "m.safetensors", options=LoadOptions(dtype=torch.float64))
    merge_multilora(model)
    merged = model.state_dict()
    for info in reader.modules():
        key = next(k for k in merged if k.endswith(".weight") and k.startswith(info.module + "."))
        want = merged[key] - base[info.module + ".weight"]
        got = reader.update(info.module).materialize()
        assert (got - want).norm() / want.norm() < 1e-12


def test_base_alignment_and_shape_check(tmp_path: Path) -> None:
    path = write_multilora(tmp_path / "m.safetensors", _tensors("vector"), _config())
    base = {f"model.{m}.weight": torch.zeros(o, i) for m, (o, i) in SHAPES.items()}
    save_file(base, str(tmp_path / "base.safetensors"))
    reader = MultiLoRAReader(path, base=open_tensors(tmp_path / "base.safetensors"))
    assert [m.module for m in reader.modules()] == ["model.enc.0.query", "model.enc.0.value"]
    base["model.enc.0.query.weight"] = torch.zeros(7, 5)  # transposed: refused, never fixed
    save_file(base, str(tmp_path / "base.safetensors"))
    with pytest.raises(CheckpointMismatchError, match=r"\(5, 7\).*\(7, 5\)"):
        MultiLoRAReader(path, base=open_tensors(tmp_path / "base.safetensors"))


# --- refusals -----------------------------------------------------------------------------------


def _write_raw(
    path: Path, tensors: dict[str, torch.Tensor], config: dict[str, object] | str
) -> Path:
    meta = file_metadata(_config())
    meta["config"] = config if isinstance(config, str) else json.dumps(config)
    save_file(tensors, str(path), metadata=meta)
    return path


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            lambda t: t.__setitem__("enc.0.query.multilora_B", torch.zeros(N - 1, 5, R)),
            r"\(2, 5, 2\)",
        ),
        (
            lambda t: t.__setitem__("enc.0.query.multilora_A", torch.zeros(N, R + 1, 7)),
            r"\(3, 3, 7\)",
        ),
        (
            lambda t: t.__setitem__("enc.0.query.multilora_scaling", torch.zeros(N)),
            r"scaling \(n, out\)",
        ),
        (lambda t: t.__setitem__("enc.0.query.multilora_scaling", torch.zeros(N, 4)), r"\(3, 4\)"),
        (lambda t: t.__setitem__("enc.0.query.multilora_A", torch.zeros(R, 7)), r"\(2, 7\)"),
        (lambda t: t.pop("enc.0.value.multilora_scaling"), "enc.0.value.multilora_scaling"),
    ],
)
def test_inconsistent_tensors_refused(tmp_path: Path, change, match: str) -> None:  # type: ignore[no-untyped-def]
    t = _tensors("vector")
    change(t)
    path = write_multilora(tmp_path / "m.safetensors", t, _config())
    with pytest.raises(AdapterConfigError, match=match) as e:
        MultiLoRAReader(path)
    assert e.value.key in SHAPES


def test_config_n_disagrees_with_tensors(tmp_path: Path) -> None:
    cfg = MultiLoRAFileConfig(r=R, n=N + 1, lora_alpha=ALPHA)
    path = write_multilora(tmp_path / "m.pt", _tensors("vector"), cfg)
    with pytest.raises(AdapterConfigError, match="n = 4"):
        MultiLoRAReader(path)


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"r": 0, "n": N, "lora_alpha": ALPHA, "scaling": "vector"}, "config.r"),
        ({"r": R, "n": "3", "lora_alpha": ALPHA, "scaling": "vector"}, "config.n"),
        ({"r": R, "n": N, "scaling": "vector"}, "config.lora_alpha"),
        ({"r": R, "n": N, "lora_alpha": ALPHA, "scaling": "matrix"}, "config.scaling"),
        ({"r": R, "n": N, "lora_alpha": ALPHA}, "config.scaling"),
        ("{not json", "config"),
        ("[1, 2]", "config"),
    ],
)
def test_config_errors_name_the_field(
    tmp_path: Path, config: dict[str, object] | str, field: str
) -> None:
    path = _write_raw(tmp_path / "m.safetensors", _tensors("vector"), config)
    with pytest.raises(AdapterConfigError) as e:
        MultiLoRAReader(path)
    assert e.value.key == field


def test_version_and_marker(tmp_path: Path) -> None:
    t = _tensors("vector")
    meta = {**file_metadata(_config()), "format_version": "2"}
    save_file(t, str(tmp_path / "v2.safetensors"), metadata=meta)
    with pytest.raises(UnsupportedFormatError, match="format_version"):
        MultiLoRAReader(tmp_path / "v2.safetensors")
    save_file(t, str(tmp_path / "plain.safetensors"))
    with pytest.raises(FileFormatError, match="spectra.multilora"):
        MultiLoRAReader(tmp_path / "plain.safetensors")
