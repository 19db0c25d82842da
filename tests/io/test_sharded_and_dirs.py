"""open_tensors on sharded checkpoints and model directories (transformers-written and by hand)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from spectra.errors import FileFormatError
from spectra.io import open_tensors
from spectra.io.containers import _open_file
from spectra.io.sharded import ShardedCheckpoint
from tests.models import tiny_bert


def _shards(n: int = 3) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and a weight map over n shards (keys deliberately not in shard order)."""
    tensors = {f"layers.{i}.weight": torch.randn(3, 2) for i in range(12)}
    weight_map = {k: f"shard-{i % n}" for i, k in enumerate(sorted(tensors))}
    return tensors, weight_map


def _write_sharded(tmp: Path, ext: str, n: int = 3) -> tuple[Path, dict[str, torch.Tensor]]:
    tensors, weight_map = _shards(n)
    weight_map = {k: f"{v}{ext}" for k, v in weight_map.items()}
    for shard in set(weight_map.values()):
        part = {k: t for k, t in tensors.items() if weight_map[k] == shard}
        if ext == ".safetensors":
            save_file(part, tmp / shard)
        else:
            torch.save(part, tmp / shard)
    index_name = (
        "model.safetensors.index.json" if ext == ".safetensors" else "pytorch_model.bin.index.json"
    )
    index = tmp / index_name
    index.write_text(json.dumps({"metadata": {"total_size": 288}, "weight_map": weight_map}))
    return index, tensors


@pytest.mark.parametrize("ext", [".safetensors", ".bin"])
def test_hand_written_sharded_index_and_its_directory(tmp_path: Path, ext: str) -> None:
    index, tensors = _write_sharded(tmp_path, ext)
    for path in (index, tmp_path):
        src = open_tensors(path)
        assert src.keys() == sorted(tensors)
        assert src.metadata == {"total_size": "288"}
        for k, t in tensors.items():
            assert src.shape(k) == (3, 2) and src.dtype(k) == torch.float32
            assert torch.equal(src.get(k), t)


def test_each_shard_opened_once_for_shapes_and_one_open_at_a_time(tmp_path: Path) -> None:
    index, tensors = _write_sharded(tmp_path, ".safetensors", n=3)
    opened: list[str] = []

    def counting_open(p: Path):
        opened.append(p.name)
        return _open_file(p)

    src = ShardedCheckpoint(index, open_file=counting_open)
    shapes = [src.shape(k) for k in list(src.keys())]  # sorted keys interleave the 3 shards
    assert shapes == [(3, 2)] * 12
    assert sorted(opened) == ["shard-0.safetensors", "shard-1.safetensors", "shard-2.safetensors"]
    # get() in shard order switches shard 3 times at most; only one shard is held
    opened.clear()
    by_shard = sorted(src.keys(), key=lambda k: src._weight_map[k])
    for k in by_shard:
        assert torch.equal(src.get(k), tensors[k])
    assert len(opened) <= 3 and len(set(opened)) == len(opened)
    assert src._current is not None and src._current[0] == "shard-2.safetensors"


def test_missing_shard_names_index_shard_and_key(tmp_path: Path) -> None:
    index, _ = _write_sharded(tmp_path, ".safetensors")
    (tmp_path / "shard-1.safetensors").unlink()
    with pytest.raises(FileFormatError) as err:
        open_tensors(tmp_path)
    msg = str(err.value)
    assert str(index) in msg and "shard-1.safetensors" in msg
    needing = [
        k
        for k, v in json.loads(index.read_text())["weight_map"].items()
        if v == "shard-1.safetensors"
    ]
    assert err.value.key in needing and repr(err.value.key) in msg


def test_shard_without_the_indexed_key(tmp_path: Path) -> None:
    index, _ = _write_sharded(tmp_path, ".safetensors")
    save_file({"other": torch.ones(1)}, tmp_path / "shard-0.safetensors")
    src = open_tensors(index)
    key = next(k for k in list(src.keys()) if src._weight_map[k] == "shard-0.safetensors")  # type: ignore[attr-defined]
    with pytest.raises(FileFormatError, match="shard-0.safetensors"):
        src.get(key)


def test_bad_index_json(tmp_path: Path) -> None:
    index = tmp_path / "model.safetensors.index.json"
    index.write_text("{not json")
    with pytest.raises(FileFormatError, match="not valid JSON"):
        open_tensors(index)
    index.write_text(json.dumps({"metadata": {}}))
    with pytest.raises(FileFormatError, match="weight_map"):
        open_tensors(index)


def test_transformers_sharded_and_single_directories(tmp_path: Path) -> None:
    model = tiny_bert()
    expected = model.state_dict()
    model.save_pretrained(tmp_path / "sharded", max_shard_size="10KB")
    model.save_pretrained(tmp_path / "single")
    assert len(list((tmp_path / "sharded").glob("model-*.safetensors"))) > 2
    for name in ("sharded", "single"):
        src = open_tensors(tmp_path / name)
        assert src.keys() == sorted(expected)
        assert "HF model directory" in src.description  # type: ignore[attr-defined]
        for k, t in expected.items():
            assert torch.equal(src.get(k), t), k


def test_directory_prefers_safetensors_and_says_so(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    save_file({"w": torch.ones(2, 2)}, tmp_path / "model.safetensors")
    torch.save({"w": torch.zeros(2, 2)}, tmp_path / "pytorch_model.bin")
    src = open_tensors(tmp_path)
    assert torch.equal(src.get("w"), torch.ones(2, 2))
    desc = src.description  # type: ignore[attr-defined]
    assert "read model.safetensors" in desc and "preferred over pytorch_model.bin" in desc


def test_directory_with_nothing_recognisable_lists_what_is_looked_for(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "weights.npy").write_bytes(b"x")
    with pytest.raises(FileFormatError) as err:
        open_tensors(tmp_path)
    msg = str(err.value)
    assert str(tmp_path) in msg
    for name in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"):
        assert name in msg
