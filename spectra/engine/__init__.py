"""The SVD engine: exact spectra of ΔW (dense or factored), dominance metrics, subspace
similarity, histograms, and measures against the base weight."""

from spectra.engine.against_base import (
    IntruderResult,
    amplification_factor,
    intruder_dimensions,
)
from spectra.engine.device import resolve_device
from spectra.engine.histogram import spectrum_histogram
from spectra.engine.metrics import (
    cumulative_energy,
    dominance_metrics,
    energy_share,
    normalized_spectrum,
    rank_tolerance,
)
from spectra.engine.subspace import (
    grassmann_distance,
    group_similarity,
    phi_grid,
    phi_grid_loop,
    principal_angles,
    projection_distance,
)
from spectra.engine.svd import Spectrum, compute_dtype, spectrum, svd_dense, svd_factored

__all__ = [
    "IntruderResult",
    "Spectrum",
    "amplification_factor",
    "compute_dtype",
    "cumulative_energy",
    "dominance_metrics",
    "energy_share",
    "grassmann_distance",
    "group_similarity",
    "intruder_dimensions",
    "normalized_spectrum",
    "phi_grid",
    "phi_grid_loop",
    "principal_angles",
    "projection_distance",
    "rank_tolerance",
    "resolve_device",
    "spectrum",
    "spectrum_histogram",
    "svd_dense",
    "svd_factored",
]
