"""The ``spectra`` command line. Each command parses its options, calls one library function,
and writes or prints the result; no computation lives here.

Exit codes: 0 success, 1 bad input, 2 usage error, 3 ``diagnose --fail-on`` verdict reached,
4 internal error (see :mod:`spectra.errors`).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from spectra import __version__
from spectra.errors import EXIT_INTERNAL, EXIT_USAGE, SpectraError

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
    2; anything else is a bug: one line and exit 4, or the traceback with ``--debug``.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    _register()
    try:
        rv = app(args=args, prog_name="spectra", standalone_mode=False)
    except SpectraError as e:
        if debug:
            raise
        typer.echo(f"spectra: error: {e}", err=True)
        sys.exit(e.exit_code)
    except typer.Abort:
        typer.echo("spectra: aborted", err=True)
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.TyperException as e:
        # Typer's (vendored Click's) usage errors: unknown option, missing argument, ...
        e.show()  # type: ignore[attr-defined]
        sys.exit(getattr(e, "exit_code", None) or EXIT_USAGE)
    except KeyboardInterrupt:
        typer.echo("spectra: interrupted (no partial output was written)", err=True)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - the one place that turns bugs into exit code 4
        if debug:
            raise
        typer.echo(
            f"spectra: internal error: {type(e).__name__}: {e}\n"
            "This is a bug in spectra. Rerun with --debug for the traceback and report it.",
            err=True,
        )
        sys.exit(EXIT_INTERNAL)
    sys.exit(rv if isinstance(rv, int) else 0)
