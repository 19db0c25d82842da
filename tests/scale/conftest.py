"""A tiny LLaMA-shaped base / full fine-tune / PEFT LoRA set, written by the benchmark's own
generator (tests/benchmarks/make_synthetic.py), sharded so that several shards are read."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

_SCRIPT = Path(__file__).parents[1] / "benchmarks" / "make_synthetic.py"
TINY_ARGS = ["--layers", "2", "--hidden", "32", "--intermediate", "48", "--vocab", "40"]


def load_make_synthetic() -> ModuleType:
    """The generator script as a module (tests/benchmarks is not a package)."""
    spec = importlib.util.spec_from_file_location("make_synthetic", _SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_synthetic"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Synthetic:
    root: Path
    base: Path
    full: Path
    lora: Path


@pytest.fixture(scope="session")
def make_synthetic() -> ModuleType:
    return load_make_synthetic()


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory: pytest.TempPathFactory, make_synthetic: ModuleType) -> Synthetic:
    root = tmp_path_factory.mktemp("synthetic")
    # 8 KB shards: the 2-layer model spans several, so shard switching is exercised
    make_synthetic.main([str(root), *TINY_ARGS, "--shard-size", "8KB", "--lora-r", "4"])
    return Synthetic(root, root / "base", root / "full", root / "lora")
