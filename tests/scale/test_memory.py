"""Bounded memory: ΔW tensors are released, nothing is cached, the staging buffer stays the
size of the largest tensor, and streamed reads leave no file pages resident (unlike mmap)."""

from __future__ import annotations

import re
import sys
import weakref
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import spectra.analysis_module as analysis_module
from spectra.analysis import AnalysisOptions, analyze
from spectra.io import open_tensors
from spectra.io.stream import TensorStream, release_staging, staging_bytes
from spectra.loaders import CheckpointReader, LoadOptions, open_checkpoint

from .conftest import Synthetic


def test_update_is_owned_by_the_caller_and_freed(synthetic: Synthetic) -> None:
    reader = open_checkpoint(synthetic.full, base=open_tensors(synthetic.base))
    update = reader.update("model.layers.1.mlp.gate_proj")
    ref = weakref.ref(update.dense)
    again = reader.update("model.layers.1.mlp.gate_proj")
    assert again.dense is not update.dense  # a fresh tensor per call: nothing shared
    assert torch.equal(again.dense, update.dense)
    del update, again
    assert ref() is None  # the reader kept no reference


def test_staging_buffer_is_the_largest_tensor_not_the_sum(tmp_path: Path) -> None:
    release_staging()
    tensors = {f"w{i}": torch.randn(64, 32).to(torch.bfloat16) for i in range(20)}
    tensors["big"] = torch.randn(100, 50).to(torch.bfloat16)
    save_file(tensors, tmp_path / "m.safetensors")
    stream = TensorStream(open_tensors(tmp_path / "m.safetensors"))
    for key in sorted(tensors):
        out = stream.widened(key, torch.float32)
        assert torch.equal(out, tensors[key].float())
    assert staging_bytes() == 100 * 50 * 2  # one bf16 "big", after 21 reads
    release_staging()
    assert staging_bytes() == 0


def test_analyze_frees_every_update_and_the_staging(synthetic: Synthetic, monkeypatch) -> None:
    """Every ΔW analyze reads is dead by the time the next module starts."""
    alive: list[weakref.ref] = []
    real = analysis_module._analyze_update

    def spy(update, *args, **kwargs):
        assert all(r() is None for r in alive), "a previous module's ΔW is still referenced"
        if update.dense is not None:
            alive.append(weakref.ref(update.dense))
        return real(update, *args, **kwargs)

    monkeypatch.setattr(analysis_module, "_analyze_update", spy)
    analyze(synthetic.base, [synthetic.full], options=AnalysisOptions(top_k=4))
    assert len(alive) == 16 and all(r() is None for r in alive)
    assert staging_bytes() == 0


def _full_reader(
    tmp_path: Path, name: str, base: torch.Tensor, tuned: torch.Tensor
) -> CheckpointReader:
    """Reader of a one-tensor full checkpoint ``{name}.weight`` = tuned over base = ``base``."""
    save_file({f"{name}.weight": base}, tmp_path / "b.safetensors")
    save_file({f"{name}.weight": tuned}, tmp_path / "t.safetensors")
    base_source = open_tensors(tmp_path / "b.safetensors")
    return open_checkpoint(
        tmp_path / "t.safetensors", base=base_source, options=LoadOptions(kind="full")
    )


def test_bf16_operands_are_widened_before_subtracting(tmp_path: Path) -> None:
    # 258 − 1 = 257 needs 9 significant bits: bf16 (8 bits) rounds it to 256, float32 does not
    base = torch.full((3, 2), 1.0, dtype=torch.bfloat16)
    tuned = torch.full((3, 2), 258.0, dtype=torch.bfloat16)
    assert float((tuned - base)[0, 0]) != 257.0
    reader = _full_reader(tmp_path, "l", base, tuned)
    assert torch.equal(reader.update("l").dense, torch.full((3, 2), 257.0))


def _rss_file_kb() -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"RssFile:\s+(\d+)", status).group(1))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_streamed_reads_leave_no_file_pages_resident(tmp_path: Path) -> None:
    """Reading 32 MB through the stream adds (almost) no file-backed RSS; the same reads
    through the memory map (safetensors get) add all 32 MB. The control shows the measure
    can fail."""
    keys = [f"w{i}" for i in range(8)]
    save_file(
        {k: torch.full((1024, 2048), float(i), dtype=torch.bfloat16) for i, k in enumerate(keys)},
        tmp_path / "m.safetensors",
    )
    mb = 1024
    source = open_tensors(tmp_path / "m.safetensors")
    stream = TensorStream(source)
    before = _rss_file_kb()
    for i, k in enumerate(keys):
        assert float(stream.widened(k, torch.float32)[5, 7]) == float(i)
    streamed = _rss_file_kb() - before
    before = _rss_file_kb()
    for k in keys:
        source.get(k).float()
    mapped = _rss_file_kb() - before
    assert streamed < 4 * mb
    assert mapped > 24 * mb


def test_subtraction_in_slices_is_exact(tmp_path: Path, monkeypatch) -> None:
    """ΔW subtracted slice by slice (7 elements here, 4M in use) equals the float64 answer."""
    import spectra.io.stream as stream_module

    monkeypatch.setattr(stream_module, "_CHUNK", 7)
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(5, 3, 2, 2, generator=gen).to(torch.bfloat16)  # a conv kernel: 60 values
    tuned = (base.float() + 1e-3 * torch.randn(5, 3, 2, 2, generator=gen)).to(torch.bfloat16)
    reader = _full_reader(tmp_path, "c", base, tuned)
    expected = (tuned.double() - base.double()).reshape(5, 12)
    assert torch.equal(reader.update("c").dense.double(), expected)
