"""Modules spread over workers give the same result as a serial run, byte for byte: a local
process pool (also through the CLI's --workers) and a Dask LocalCluster."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from spectra.analysis import AnalysisOptions, analyze
from spectra.analysis_module import module_cost
from spectra.errors import FileFormatError, OptionError
from spectra.parallel import ExecutionOptions, ProcessExecutor, make_executor, thread_budget
from spectra.results import dumps_result

from .conftest import Synthetic

# small top_k keeps φ grids short; base metrics on, so every part of a row is compared
OPTIONS = AnalysisOptions(top_k=4)


def _threads(_: int) -> int:
    return torch.get_num_threads()


@pytest.fixture(scope="module")
def pool():
    with make_executor(ExecutionOptions(workers=2)) as ex:
        yield ex


@pytest.fixture(scope="module")
def serial_json(synthetic: Synthetic) -> str:
    return dumps_result(analyze(synthetic.base, [synthetic.full, synthetic.lora], options=OPTIONS))


def test_thread_budget_never_oversubscribes() -> None:
    assert thread_budget(2, cores=2) == 1
    assert thread_budget(3, cores=16) == 5
    assert thread_budget(32, cores=16) == 1  # never 0
    for workers in range(1, 20):
        assert workers * thread_budget(workers, cores=16) <= max(16, workers)


def test_process_pool_is_byte_identical_to_serial(synthetic, serial_json, pool) -> None:
    assert isinstance(pool, ProcessExecutor) and pool.workers == 2
    # each worker runs cores // 2 threads, and items come back in order
    assert list(pool.map(_threads, range(4))) == [thread_budget(2)] * 4
    seen: list[str] = []
    result = analyze(
        synthetic.base, [synthetic.full, synthetic.lora], options=OPTIONS, executor=pool,
        progress=lambda done, total, module: seen.append(module),
    )  # fmt: skip
    assert dumps_result(result) == serial_json
    # progress saw every module once, the costliest first
    assert sorted(seen) == sorted({m["module"] for m in result["modules"]})
    cost = dict.fromkeys(seen, 0)
    for m in result["modules"]:
        rank = m["rank"] if m["kind"] == "lora" else None
        cost[m["module"]] += module_cost(tuple(m["shape"]), rank)
    assert [cost[m] for m in seen] == sorted(cost.values(), reverse=True)


def test_worker_errors_keep_their_class_and_message(tmp_path: Path, synthetic, pool) -> None:
    """A file that breaks after the main process opened it: the worker's FileFormatError comes
    back as itself, naming the file."""
    import shutil

    full = tmp_path / "full"
    shutil.copytree(synthetic.full, full)

    class TruncateThenRun:
        kind, workers = "process", 2

        def map(self, fn, items):
            for shard in full.glob("*.safetensors"):
                shard.write_bytes(shard.read_bytes()[:100])
            return pool.map(fn, items)

    with pytest.raises(FileFormatError, match="model-0000"):
        analyze(synthetic.base, [full], options=OPTIONS, executor=TruncateThenRun())


def test_dask_local_cluster_is_byte_identical_to_serial(synthetic, serial_json) -> None:
    distributed = pytest.importorskip("distributed")
    from spectra.parallel import DaskExecutor

    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        executor = DaskExecutor(client)
        assert executor.workers == 2
        result = analyze(
            synthetic.base, [synthetic.full, synthetic.lora], options=OPTIONS, executor=executor
        )
        executor.close()  # a client passed in stays open: the caller owns it
        assert client.status == "running"
    assert dumps_result(result) == serial_json


def test_cli_workers_writes_the_serial_json(synthetic, tmp_path: Path, run_cli) -> None:
    args = ["compare", synthetic.base, synthetic.full, synthetic.lora, "-k", "4", "-q"]
    assert run_cli(*args, "--json", tmp_path / "s.json").code == 0
    res = run_cli(*args, "--workers", "2", "--json", tmp_path / "w.json")
    assert res.code == 0, res.err
    assert (tmp_path / "w.json").read_bytes() == (tmp_path / "s.json").read_bytes()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scheduler", "tcp://nowhere:1"], "--scheduler needs --executor dask"),
        (["--executor", "serial", "--workers", "2"], "serial runs one worker"),
        (["--executor", "threads"], "--executor must be one of"),
        (["--workers", "0"], "--workers must be at least 1"),
        (["--svd", "lanczos"], "--svd must be exact or randomized"),
    ],
)
def test_cli_refuses_bad_execution_options(synthetic, run_cli, args, message) -> None:
    res = run_cli("compare", synthetic.base, synthetic.lora, *args)
    assert res.code == 1 and message in res.err


def test_execution_options_validate() -> None:
    with pytest.raises(OptionError, match="--threads"):
        ExecutionOptions(threads=0)
    assert ExecutionOptions(workers=3).kind == "process"
    assert ExecutionOptions().kind == "serial"
    assert ExecutionOptions(executor="dask").kind == "dask"
