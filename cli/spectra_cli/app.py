"""The ``spectra`` command line. Each command parses its options, calls one library function,
and writes or prints the result; no computation lives here.

Exit codes: 0 success, 1 bad input, 2 usage error, 3 ``diagnose --fail-on`` verdict reached,
4 internal error (see :mod:`spectra.errors`), 130 interrupted (Ctrl-C), 141 standard output
closed early (``spectra … | head``: ends quietly, as a process stopped by SIGPIPE).

Commands live in their own modules as plain functions; this module registers each one
explicitly (:func:`_register`); no command module imports this one.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections.abc import Callable
from typing import Annotated, Any

import typer

from spectra import __version__
from spectra.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_USAGE, SpectraError
from spectra_cli import (
    commands_analysis,
    commands_decide,
    commands_demo,
    commands_report,
    commands_study,
    commands_trajectory,
)
from spectra_cli.text import printable

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a process stopped by Ctrl-C
EXIT_PIPE_CLOSED = 141  # 128 + SIGPIPE, as shells report a process whose reader went away

app = typer.Typer(
    name="spectra",
    help="What did fine-tuning do to the weights? Exact spectra, dominance metrics and "
    "subspace similarity of full fine-tuning, LoRA and MultiLoRA updates.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: no truncated option names in an 80-column terminal
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"spectra {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show full tracebacks (for bug reports).")
    ] = False,
) -> None:
    """spectra: what fine-tuning did to a model's weights."""


class _StdoutClosed(Exception):
    """The reader of standard output went away (``spectra … | head``)."""


def _pipe_aware(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with a broken stdout pipe raised as :class:`_StdoutClosed`, before Typer turns
    it into exit code 1 (the bad-input code)."""

    @functools.wraps(fn)
    def command(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BrokenPipeError as e:
            raise _StdoutClosed from e

    return command


def _register() -> None:
    """Every command, once: ``app.command()(module.function)``."""
    if app.registered_commands:
        return
    for fn, name in (
        (commands_analysis.inspect, None),
        (commands_analysis.compare, None),
        (commands_report.diagnose_cmd, "diagnose"),
        (commands_report.figures, None),
        (commands_report.report, None),
        (commands_demo.demo, None),
        (commands_study.study, None),
        (commands_trajectory.trajectory, None),
        *((fn, None) for fn in commands_decide.COMMANDS),
    ):
        app.command(name=name)(_pipe_aware(fn))


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script and ``python -m spectra``.

    User errors (:class:`SpectraError`) print one line on stderr and exit 1; usage errors exit
    2; an interrupt exits 130; anything else is a bug: one line and exit 4, or the traceback
    with ``--debug``. Text taken from input files (key names, paths) is shown with control
    characters escaped, so a crafted name can neither split the message nor drive the
    terminal. Warnings of the libraries underneath (torch, matplotlib) are shown only with
    ``--debug``: the outcome of a command is its output or spectra's own message.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    _register()
    try:
        with warnings.catch_warnings():
            if not debug:
                warnings.simplefilter("ignore")
            rv = app(args=args, prog_name="spectra", standalone_mode=False)
    except SpectraError as e:
        if debug:
            raise
        typer.echo(f"spectra: error: {printable(str(e))}", err=True)
        sys.exit(e.exit_code)
    except typer.Abort:
        # Click's Abort: end of input at a prompt (Ctrl-D); Ctrl-C comes back as rv 130 below
        typer.echo("spectra: aborted (no partial output was written)", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.BadParameter as e:
        if not _is_path_check(e):
            e.show()
            sys.exit(e.exit_code or EXIT_USAGE)
        # Click's own check of a path argument (e.g. "is not readable"): bad input, not usage
        typer.echo(f"spectra: error: {printable(e.format_message())}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except typer.TyperException as e:
        # Typer's (vendored Click's) usage errors: unknown option, missing argument, ...
        e.show()  # type: ignore[attr-defined]
        sys.exit(getattr(e, "exit_code", None) or EXIT_USAGE)
    except KeyboardInterrupt:
        typer.echo("spectra: interrupted (no partial output was written)", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except _StdoutClosed:
        _quiet_pipe_exit()
    except Exception as e:  # noqa: BLE001 - the one place that turns bugs into exit code 4
        if debug:
            raise
        typer.echo(
            f"spectra: internal error: {type(e).__name__}: {printable(str(e))}\n"
            "This is a bug in spectra. Rerun with --debug for the traceback and report it.",
            err=True,
        )
        sys.exit(EXIT_INTERNAL)
    if rv == EXIT_INTERRUPTED:  # Typer turns Ctrl-C into a return value of 130, silently
        typer.echo("spectra: interrupted (no partial output was written)", err=True)
    try:
        sys.stdout.flush()  # what is still buffered may meet the closed pipe only now
    except BrokenPipeError:
        _quiet_pipe_exit()
    sys.exit(rv if isinstance(rv, int) else 0)


def _quiet_pipe_exit() -> None:
    """End without a word when stdout's reader went away: point stdout at the null device (so
    the interpreter's last flush cannot fail loudly) and exit 141."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # a stdout without a file descriptor
        pass
    sys.exit(EXIT_PIPE_CLOSED)


# How Click / Typer end the message when a path argument fails its own check
_PATH_CHECKS = ("does not exist.", "is a file.", "is a directory.", "is not readable.")


def _is_path_check(e: typer.BadParameter) -> bool:
    """True when Click refused the value of a path parameter (not an option's spelling)."""
    return e.message.endswith(_PATH_CHECKS)


_register()
