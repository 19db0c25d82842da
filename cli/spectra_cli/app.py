"""The ``spectra`` command line. Each command parses its options, calls one library function,
and writes or prints the result; no computation lives here.

Exit codes: 0 success, 1 bad input, 2 usage error, 3 ``diagnose --fail-on`` verdict reached,
4 internal error (see :mod:`spectra.errors`), 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import sys
import warnings
from typing import Annotated

import typer

from spectra import __version__
from spectra.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_USAGE, SpectraError

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a process stopped by Ctrl-C

app = typer.Typer(
    name="spectra",
    help="What did fine-tuning do to the weights? Exact spectra, dominance metrics and "
    "subspace similarity of full fine-tuning, LoRA and MultiLoRA updates.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
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


def _register() -> None:
    # Commands live in their own modules, grouped by role; importing them registers them.
    from spectra_cli import commands_analysis, commands_demo, commands_report  # noqa: F401


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
    sys.exit(rv if isinstance(rv, int) else 0)


# How Click / Typer end the message when a path argument fails its own check
_PATH_CHECKS = ("does not exist.", "is a file.", "is a directory.", "is not readable.")


def _is_path_check(e: typer.BadParameter) -> bool:
    """True when Click refused the value of a path parameter (not an option's spelling)."""
    return e.message.endswith(_PATH_CHECKS)


def printable(text: str) -> str:
    """``text`` with every non-printable character (newline, ESC, other C0/C1 controls, bidi
    overrides and other format characters) written as its Python escape, e.g. ``\\x1b``."""
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )
