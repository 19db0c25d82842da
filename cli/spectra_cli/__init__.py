"""The ``spectra`` command line: a thin Typer app over the :mod:`spectra` library."""
