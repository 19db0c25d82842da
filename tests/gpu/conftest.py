"""The GPU tests reuse the CLI tests' real checkpoints; run_cli is in tests/conftest.py."""

from tests.cli.conftest import ckpts  # noqa: F401
