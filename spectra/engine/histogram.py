"""Histogram of σ/σ_1 over full spectra, pooled over modules (the MultiLoRA paper's figure).

The full spectrum of a rank-R update of an out × in matrix has min(out, in) values, all but
R exactly zero; those structural zeros are counted (in the first bin), which is what makes
LoRA's histogram "fall at both ends" and full fine-tuning's bell-shaped.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch

from spectra.engine.metrics import normalized_spectrum
from spectra.engine.svd import Spectrum

SpectrumLike = Spectrum | tuple[torch.Tensor | np.ndarray, int]


def _ratios(spectra: Iterable[SpectrumLike]) -> Iterator[tuple[np.ndarray, int]]:
    """(σ / σ_1 (m,), structural zeros) of each module whose σ/σ_1 is defined: modules with
    no values, with non-finite values or with σ_1 == 0 (a zero update) are skipped."""
    for item in spectra:
        if isinstance(item, Spectrum):
            values, zeros = item.values, item.structural_zeros
        else:
            values, zeros = torch.as_tensor(item[0]), int(item[1])
        if len(values) == 0 or not bool(torch.isfinite(values).all()):
            continue
        ratio = normalized_spectrum(values, mode="max").numpy()
        if ratio[0] != 0.0:  # σ_1 == 0: σ/σ_1 undefined
            yield ratio, zeros


def spectrum_histogram(
    spectra: Iterable[SpectrumLike], *, bins: int = 50, density: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled histogram of σ_i / σ_1 over the full spectra of several modules.

    Each module is normalized by its own σ_1; its structural zeros add to the first bin.
    Modules with σ_1 == 0 (a zero update: σ/σ_1 undefined), with no values, or with
    non-finite values are skipped.

    Args:
        spectra: :class:`Spectrum` objects, or (values (m,), structural_zeros) pairs.
        bins: Number of equal-width bins on [0, 1] (the last bin includes 1).
        density: Return a density (counts / (total · bin width), integrating to 1) instead
            of counts.

    Returns:
        (counts (bins,) int64, or float64 when ``density``; edges (bins + 1,) float64).

    Raises:
        ValueError: ``bins`` < 1.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts = np.zeros(bins, dtype=np.int64)
    for ratio, zeros in _ratios(spectra):
        counts += np.histogram(np.clip(ratio, 0.0, 1.0), bins=edges)[0]
        counts[0] += zeros
    if not density:
        return counts, edges
    total = counts.sum()
    dens = counts / (total * np.diff(edges)) if total else np.zeros(bins, dtype=np.float64)
    return dens, edges


def log_spectrum_histogram(
    spectra: Iterable[SpectrumLike], *, bins: int = 50, decades: float = 4.0
) -> tuple[np.ndarray, np.ndarray, int]:
    """Pooled histogram of log10(σ_i / σ_1) over the non-zero values of several modules.

    The log axis shows the shape of a spectrum whose values span decades (a dense update):
    each module is normalized by its own σ_1, its non-zero values are placed on
    [-decades, 0] (σ = σ_1 at 0). Zeros (structural or computed) have no logarithm and are
    not counted; non-zero values below 10^-decades are counted in ``below``. Modules skipped
    as in :func:`spectrum_histogram`.

    Args:
        spectra: :class:`Spectrum` objects, or (values (m,), structural_zeros) pairs.
        bins: Number of equal-width bins on [-decades, 0] (the last bin includes 0).
        decades: Width of the axis in powers of ten.

    Returns:
        (counts (bins,) int64; edges (bins + 1,) float64, in log10 units; ``below``: values
        under the axis).

    Raises:
        ValueError: ``bins`` < 1 or ``decades`` <= 0.
    """
    if bins < 1 or not decades > 0:
        raise ValueError(f"need bins >= 1 and decades > 0, got bins={bins}, decades={decades}")
    edges = np.linspace(-float(decades), 0.0, bins + 1)
    counts = np.zeros(bins, dtype=np.int64)
    below = 0
    for ratio, _zeros in _ratios(spectra):
        logs = np.log10(np.clip(ratio[ratio > 0.0], None, 1.0))
        below += int((logs < -decades).sum())
        counts += np.histogram(logs[logs >= -decades], bins=edges)[0]
    return counts, edges, below
