"""FullReader: ΔW = W_tuned − W_base from real files in every container, against float64."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from spectra.errors import AmbiguousInputError, CheckpointMismatchError
from spectra.io import open_tensors
from spectra.loaders.base import LoadOptions
from spectra.loaders.full import FullReader
from tests.models import tiny_bert_config

F32 = LoadOptions()
F64 = LoadOptions(dtype=torch.float64)


@pytest.fixture(scope="module")
def bert_pair(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A tiny BertModel saved as the base (HF dir), and a perturbed copy's state dict."""
    from transformers import BertModel

    torch.manual_seed(1)
    base = BertModel(tiny_bert_config())
    base_dir = tmp_path_factory.mktemp("base")
    base.save_pretrained(base_dir)
    base_sd = {k: v.detach().clone() for k, v in base.state_dict().items()}
    tuned_sd = {k: v + 0.01 * torch.randn_like(v) for k, v in base_sd.items()}
    return base_dir, base_sd, tuned_sd


def _reference(base_sd, tuned_sd) -> dict[str, torch.Tensor]:
    """ΔW in float64 for every 2-D ``.weight`` key, named by module."""
    return {
        k.removesuffix(".weight"): tuned_sd[k].double() - base_sd[k].double()
        for k in base_sd
        if k.endswith(".weight") and base_sd[k].ndim == 2
    }


def _save_sharded_bin(sd: dict[str, torch.Tensor], out: Path, n: int = 3) -> Path:
    out.mkdir()
    weight_map = {k: f"pytorch_model-{i % n:05d}.bin" for i, k in enumerate(sorted(sd))}
    for shard in set(weight_map.values()):
        torch.save({k: v for k, v in sd.items() if weight_map[k] == shard}, out / shard)
    (out / "pytorch_model.bin.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    return out


def _write_tuned(container: str, tuned_sd: dict[str, torch.Tensor], tmp: Path) -> Path:
    from transformers import BertModel

    if container == "safetensors":
        save_file(tuned_sd, tmp / "tuned.safetensors")
        return tmp / "tuned.safetensors"
    if container == "pt_nested_ddp":
        wrapped = {
            "epoch": 3,
            "state_dict": {"model": {f"module.{k}": v for k, v in tuned_sd.items()}},
        }
        torch.save(wrapped, tmp / "tuned.pt")
        return tmp / "tuned.pt"
    if container == "sharded_bin":
        return _save_sharded_bin(tuned_sd, tmp / "tuned_bin")
    model = BertModel(tiny_bert_config())
    model.load_state_dict(tuned_sd)
    if container == "sharded_safetensors":
        model.save_pretrained(tmp / "tuned_sharded", max_shard_size="10KB")
        return tmp / "tuned_sharded"
    assert container == "hf_dir"
    model.save_pretrained(tmp / "tuned_dir")
    return tmp / "tuned_dir"


@pytest.mark.parametrize(
    "container", ["safetensors", "sharded_safetensors", "sharded_bin", "pt_nested_ddp", "hf_dir"]
)
def test_delta_matches_float64_reference_in_every_container(
    bert_pair, tmp_path: Path, container: str
) -> None:
    base_dir, base_sd, tuned_sd = bert_pair
    ref = _reference(base_sd, tuned_sd)
    tuned_path = _write_tuned(container, tuned_sd, tmp_path)
    reader = FullReader(tuned_path, base=open_tensors(base_dir), options=F32)
    infos = reader.modules()
    assert [i.module for i in infos] == sorted(ref)
    assert reader.report.only_in_base == [] and reader.report.only_in_tuned == []
    n_1d = sum(1 for v in tuned_sd.values() if v.ndim == 1)
    assert len(reader.report.skipped_1d) == n_1d
    for info in infos:
        upd = reader.update(info.module)
        assert upd.dense is not None and upd.dense.dtype == torch.float32
        assert upd.shape == tuple(ref[info.module].shape) == info.shape
        torch.testing.assert_close(upd.dense.double(), ref[info.module], rtol=1e-6, atol=1e-8)
    # float64 on request: the difference of two float32 numbers this close is exact
    reader64 = FullReader(tuned_path, base=open_tensors(base_dir), options=F64)
    for m, expected in ref.items():
        assert torch.equal(reader64.update(m).dense, expected), m


def test_bf16_tuned_is_widened_before_subtracting(tmp_path: Path) -> None:
    # base (float32): 1 + k·2⁻¹², k ∈ 1..7, not representable in bf16 (ulp at 1 is 2⁻⁷)
    k = torch.randint(1, 8, (4, 6)).float()
    w0 = 1.0 + k * 2.0**-12
    # tuned (bf16): 1 + 2⁻⁷·b, b ∈ {0, 1}, exact in bf16
    b = torch.randint(0, 2, (4, 6)).float()
    tuned = (1.0 + b * 2.0**-7).bfloat16()
    save_file({"lin.weight": w0}, tmp_path / "base.safetensors")
    save_file({"lin.weight": tuned}, tmp_path / "tuned.safetensors")
    reader = FullReader(
        tmp_path / "tuned.safetensors",
        base=open_tensors(tmp_path / "base.safetensors"),
        options=F32,
    )
    delta = reader.update("lin").dense
    exact = tuned.double() - w0.double()  # b·2⁻⁷ − k·2⁻¹², never 0
    assert torch.equal(delta.double(), exact)
    assert (delta != 0).all()
    # subtracting in bf16 rounds the base to 1.0 and loses the −k·2⁻¹² part of every entry
    narrow = (tuned - w0.bfloat16()).double()
    assert torch.equal(narrow, b.double() * 2.0**-7)
    assert (narrow == 0).any() and not torch.equal(narrow, exact)
    info = reader.modules()[0]
    assert info.detail["tuned_dtype"] == "bfloat16" and info.detail["base_dtype"] == "float32"
    assert info.rank is None and info.scaling == "dense: W_tuned - W_base"


def test_fp16_operands_that_would_overflow_in_fp16(tmp_path: Path) -> None:
    base = torch.full((2, 3), -60000.0, dtype=torch.float16)
    tuned = torch.full((2, 3), 60000.0, dtype=torch.float16)
    assert torch.isinf(tuned - base).all()  # the fp16 subtraction loses the update
    save_file({"w.weight": base}, tmp_path / "b.safetensors")
    save_file({"w.weight": tuned}, tmp_path / "t.safetensors")
    reader = FullReader(
        tmp_path / "t.safetensors", base=open_tensors(tmp_path / "b.safetensors"), options=F32
    )
    assert torch.equal(reader.update("w").dense, torch.full((2, 3), 120000.0))


def test_head_model_aligned_to_backbone_by_prefix(bert_pair, tmp_path: Path) -> None:
    from transformers import BertForSequenceClassification

    base_dir, base_sd, _ = bert_pair
    clf = BertForSequenceClassification(tiny_bert_config())
    clf.bert.load_state_dict(base_sd)
    with torch.no_grad():
        clf.bert.encoder.layer[1].attention.self.query.weight.add_(0.5)
    clf.save_pretrained(tmp_path / "clf")
    reader = FullReader(tmp_path / "clf", base=open_tensors(base_dir), options=F32)
    names = [i.module for i in reader.modules()]
    assert names == sorted(_reference(base_sd, base_sd))  # base names, no "bert." prefix
    assert reader.report.only_in_tuned == ["classifier.weight"]
    assert any("prefix" in n and "'bert." in n for n in reader.report.notes)
    assert "classifier.bias" in reader.report.skipped_1d
    q = reader.update("encoder.layer.1.attention.self.query").dense
    torch.testing.assert_close(q, torch.full((16, 16), 0.5), rtol=0, atol=1e-6)
    assert torch.count_nonzero(reader.update("encoder.layer.0.attention.self.query").dense) == 0


def test_ambiguous_prefix_is_refused_with_candidates(tmp_path: Path) -> None:
    save_file({"layer.0.dense.weight": torch.ones(2, 2)}, tmp_path / "t.safetensors")
    save_file(
        {
            "text.layer.0.dense.weight": torch.ones(2, 2),
            "vision.layer.0.dense.weight": torch.ones(2, 2),
        },
        tmp_path / "b.safetensors",
    )
    with pytest.raises(CheckpointMismatchError) as err:
        FullReader(
            tmp_path / "t.safetensors", base=open_tensors(tmp_path / "b.safetensors"), options=F32
        )
    assert "'text.layer.0.dense'" in str(err.value) and "'vision.layer.0.dense'" in str(err.value)


def test_shape_mismatch_names_key_and_both_shapes(tmp_path: Path) -> None:
    save_file({"a.weight": torch.ones(4, 3)}, tmp_path / "t.safetensors")
    save_file({"a.weight": torch.ones(4, 5)}, tmp_path / "b.safetensors")
    with pytest.raises(CheckpointMismatchError) as err:
        FullReader(
            tmp_path / "t.safetensors", base=open_tensors(tmp_path / "b.safetensors"), options=F32
        )
    msg = str(err.value)
    assert "a.weight" in msg and "(4, 3)" in msg and "(4, 5)" in msg


def test_one_sided_keys_reported_and_other_tensors_skipped(tmp_path: Path) -> None:
    tuned = {
        "a.weight": torch.randn(3, 2),
        "b.weight": torch.randn(3, 2),
        "a.bias": torch.randn(3),
        "pos_embed": torch.randn(1, 5, 2),
        "position_ids": torch.arange(5)[None],
    }
    base = {"a.weight": torch.randn(3, 2), "c.weight": torch.randn(2, 2), "a.bias": torch.randn(3)}
    save_file(tuned, tmp_path / "t.safetensors")
    save_file(base, tmp_path / "b.safetensors")
    reader = FullReader(
        tmp_path / "t.safetensors", base=open_tensors(tmp_path / "b.safetensors"), options=F32
    )
    assert [i.module for i in reader.modules()] == ["a"]
    assert reader.report.only_in_tuned == ["b.weight"]
    assert reader.report.only_in_base == ["c.weight"]
    assert reader.report.skipped_1d == ["a.bias"]
    notes = " ".join(reader.report.notes)
    assert "'pos_embed'" in notes and "1 non-floating" in notes
    torch.testing.assert_close(
        reader.update("a").dense, tuned["a.weight"] - base["a.weight"], rtol=0, atol=0
    )


def test_conv_kernel_is_flattened_to_out_by_in_kh_kw(tmp_path: Path) -> None:
    base, tuned = torch.randn(4, 3, 3, 3), torch.randn(4, 3, 3, 3)
    save_file({"conv.weight": base}, tmp_path / "b.safetensors")
    save_file({"conv.weight": tuned}, tmp_path / "t.safetensors")
    reader = FullReader(
        tmp_path / "t.safetensors", base=open_tensors(tmp_path / "b.safetensors"), options=F64
    )
    (info,) = reader.modules()
    assert info.shape == (4, 27) and info.detail["stored_shape"] == [4, 3, 3, 3]
    delta = reader.update("conv").dense
    assert delta.shape == (4, 27)
    assert torch.equal(delta, (tuned.double() - base.double()).reshape(4, 27))


def test_no_base_is_refused(tmp_path: Path) -> None:
    save_file({"a.weight": torch.ones(2, 2)}, tmp_path / "t.safetensors")
    with pytest.raises(AmbiguousInputError, match="needs BASE"):
        FullReader(tmp_path / "t.safetensors", base=None, options=F32)


class _CountingSource:
    """Wraps a TensorSource and records every get()."""

    def __init__(self, inner):
        self._inner, self.path, self.metadata, self.gets = inner, inner.path, inner.metadata, []

    def keys(self):
        return self._inner.keys()

    def shape(self, key):
        return self._inner.shape(key)

    def dtype(self, key):
        return self._inner.dtype(key)

    def __contains__(self, key):
        return key in self._inner

    def get(self, key):
        self.gets.append(key)
        return self._inner.get(key)


def test_reads_only_the_pair_asked_for_and_caches_nothing(tmp_path: Path) -> None:
    sd = {f"l{i}.weight": torch.randn(2, 2) for i in range(4)}
    save_file(sd, tmp_path / "b.safetensors")
    save_file({k: v + 1 for k, v in sd.items()}, tmp_path / "t.safetensors")
    base = _CountingSource(open_tensors(tmp_path / "b.safetensors"))
    reader = FullReader(tmp_path / "t.safetensors", base=base, options=F32)
    assert base.gets == []  # listing reads shapes and dtypes only
    reader.update("l2")
    reader.update("l2")
    assert base.gets == ["l2.weight", "l2.weight"]
