"""Fixtures of the hostile-input suite: tiny valid checkpoints (never modified: every CLI run
checks their hashes) and the in-process CLI runner."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.security.hostile import Ckpts, make_ckpts, tree_hash


@pytest.fixture(scope="session")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> Ckpts:
    return make_ckpts(tmp_path_factory.mktemp("valid"))


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def invoke(*args: str | Path) -> CliResult:
    """The real entry point, in-process: exit code, stdout, stderr."""
    from spectra_cli.app import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else int(e.code is not None)
    return CliResult(code, out.getvalue(), err.getvalue())


@pytest.fixture
def run_cli(ckpts: Ckpts):
    """Run the CLI and check that no file under the inputs given changed (by hash)."""

    def run(*args: str | Path, inputs: tuple[Path, ...] = ()) -> CliResult:
        watched = (ckpts.root, *inputs)
        before = [tree_hash(p) for p in watched]
        res = invoke(*args)
        assert [tree_hash(p) for p in watched] == before, f"an input changed: {args}"
        return res

    return run
