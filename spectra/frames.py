"""The result as pandas DataFrames, for notebooks and further analysis.

``frames(result)`` wraps the same row-building functions the report's CSV files come from
(:mod:`spectra.tables`), so ``frames(result).modules.to_csv(...)`` and the report's
``modules.csv`` hold the same rows and columns. pandas is an optional extra
(``pip install "spectra-ft[frames]"``); the rest of spectra never imports it.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from spectra.errors import SpectraError
from spectra.tables import Table, modules_table, similarity_table, summary_table

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Frames", "FramesExtraMissingError", "frames"]

INSTALL_HINT = 'pip install "spectra-ft[frames]"'


class FramesExtraMissingError(SpectraError):
    """pandas is not installed (the ``frames`` extra)."""


@dataclass(frozen=True)
class Frames:
    """An analysis result as three DataFrames (columns as in the report's CSV files).

    Attributes:
        modules: One row per module × method: module, label, kind, stack, layer,
            module_type, out, in, rank, structural_zeros, nonfinite, every metric
            (``top1_energy`` … ``k90`` … ``utilisation``), every base metric, notes.
        similarity: One row per module × method pair × side: module, a, b, side, k,
            phi_1_1, phi_k_k, grassmann_distance, principal_angles (``;``-separated).
        summary: One row per method: module counts and the means of ``result["summary"]``.
    """

    modules: pd.DataFrame
    similarity: pd.DataFrame
    summary: pd.DataFrame


def pandas() -> ModuleType:
    """The ``pandas`` module (imported on first use: it is an optional extra).

    Raises:
        FramesExtraMissingError: It is not installed.
    """
    try:
        return importlib.import_module("pandas")
    except ImportError as e:
        raise FramesExtraMissingError(f"DataFrames need pandas: {INSTALL_HINT}") from e


def frames(result: Mapping[str, Any]) -> Frames:
    """The modules, similarity and summary tables of ``result`` as pandas DataFrames.

    Args:
        result: An analysis result (:func:`spectra.analysis.analyze` or
            :func:`spectra.results.load_result`).

    Returns:
        :class:`Frames`; a missing value is ``None`` in object columns and NaN in numeric ones.

    Raises:
        FramesExtraMissingError: pandas is not installed.
    """
    pd = pandas()

    def frame(table: Table) -> pd.DataFrame:
        return pd.DataFrame([list(row) for row in table.rows], columns=list(table.header))

    return Frames(
        modules=frame(modules_table(result)),
        similarity=frame(similarity_table(result)),
        summary=frame(summary_table(result)),
    )
