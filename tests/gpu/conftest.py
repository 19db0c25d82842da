"""The GPU tests reuse the CLI tests' real checkpoints and runner."""

from tests.cli.conftest import ckpts, run_cli  # noqa: F401
