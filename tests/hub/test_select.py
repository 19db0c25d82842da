"""Which repo files are fetched, from the file list alone."""

from __future__ import annotations

import pytest

from spectra.hub import HubId, HubNotFoundError
from spectra.hub.select import select, shards_for

BASE = {
    "README.md",
    "config.json",
    "model.safetensors.index.json",
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
    "pytorch_model.bin.index.json",
    "pytorch_model-00001-of-00002.bin",
}


def test_adapter_prefers_safetensors() -> None:
    files = {"adapter_config.json", "adapter_model.safetensors", "adapter_model.bin", "README.md"}
    s = select(HubId("o/a"), files)
    assert s.layout == "adapter"
    assert s.files == ("adapter_config.json", "adapter_model.safetensors")
    only_bin = select(HubId("o/a"), files - {"adapter_model.safetensors"})
    assert only_bin.files == ("adapter_config.json", "adapter_model.bin")


def test_sharded_safetensors_before_bin_and_in_subfolders() -> None:
    s = select(HubId("o/b"), BASE)
    assert (s.layout, s.files, s.extras) == (
        "sharded",
        ("model.safetensors.index.json",),
        ("config.json",),
    )
    nested = select(HubId("o/b", path="text_encoder"), {f"text_encoder/{f}" for f in BASE})
    assert nested.files == ("text_encoder/model.safetensors.index.json",)
    bin_only = {f for f in BASE if "safetensors" not in f}
    assert select(HubId("o/b"), bin_only).files == ("pytorch_model.bin.index.json",)


def test_one_weights_file_or_a_named_one() -> None:
    assert select(HubId("o/m"), {"README.md", "multilora.safetensors"}).files == (
        "multilora.safetensors",
    )
    named = select(HubId("o/m", path="runs/x.pt"), {"runs/x.pt", "runs/y.pt"})
    assert (named.layout, named.target) == ("file", "runs/x.pt")
    with pytest.raises(
        HubNotFoundError, match="2 weights files .* name one, e.g. hf://o/m/runs/x.pt"
    ):
        select(HubId("o/m", path="runs"), {"runs/x.pt", "runs/y.pt"})


def test_no_weights_names_what_is_there() -> None:
    with pytest.raises(HubNotFoundError) as info:
        select(HubId("o/e"), {"README.md", "config.json", "a/adapter_config.json"})
    message = str(info.value)
    assert "holds no weights" in message and "hf://o/e/a" in message
    assert "README.md, config.json" in message


def test_shards_for() -> None:
    weight_map = {"a.weight": "s1", "a.bias": "s1", "b.weight": "s2", "c.weight": "s3"}
    assert shards_for(weight_map, None) == (["s1", "s2", "s3"], [])
    assert shards_for(weight_map, {"b.weight", "zz.weight"}) == (["s2"], ["zz.weight"])
