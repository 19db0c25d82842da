"""Test-wide settings: one thread (two BLAS jobs at once slow each other ~8x), seeded RNGs,
headless matplotlib, no network."""

import os
import tempfile
from dataclasses import dataclass

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# W0 decompositions are cached per user (spectra.engine.cache): never in the real one
os.environ.setdefault("SPECTRA_CACHE_DIR", tempfile.mkdtemp(prefix="spectra-test-cache-"))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory: pytest.TempPathFactory):
    """One quick recipe run for the whole session, written where `spectra demo --quick --out
    <dir>` looks for its cached run (``<dir>/run``): the recipe tests inspect it, the demo
    test reuses it instead of training again. Returns (RecipeResult, progress messages)."""
    from spectra.recipe import RecipeConfig, run_recipe

    demo_dir = tmp_path_factory.mktemp("demo")
    messages: list[str] = []
    result = run_recipe(
        RecipeConfig.quick(num_threads=1), demo_dir / "run", progress=messages.append
    )
    return result, messages


@dataclass
class CliResult:
    """What one in-process CLI run gave: exit code, stdout, stderr."""

    code: int
    out: str
    err: str


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]):
    """Run the real entry point in-process: returns exit code, stdout, stderr."""
    from spectra_cli.app import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = int(e.code or 0)
        cap = capsys.readouterr()
        return CliResult(code, cap.out, cap.err)

    return run
