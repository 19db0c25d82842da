"""The analysis result, defined once: the JSON that ``spectra compare --json`` writes.

Every field of the result is declared here with its type, its bounds and one line of
documentation. :func:`spectra.analysis.analyze` builds the result through these types; the
validator that checks a saved result when it is read back (:mod:`spectra.io.result_schema`)
and the reference page ``docs/json.md`` (:func:`spectra.io.result_schema.schema_markdown`)
are derived from them, so the three cannot disagree.

Conventions: a field typed ``NotRequired`` may be absent from a file (readers fall back);
all others must be present. ``T | None`` is written as ``null`` when undefined (NaN is always
written as ``null``). Numbers must be finite. Unknown fields are allowed in a file (newer
writers may add some) but every field spectra writes is declared here.
"""

# no `from __future__ import annotations`: TypedDict must see NotRequired/Annotated at class
# creation to sort the keys into required and optional ones
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NotRequired, TypedDict

# Largest matrix side accepted in a result (the widest real layers are ~2^18); the full
# spectrum of a module is allocated from its shape, so a crafted shape must not size it.
MAX_SIDE = 1 << 24
MAX_INT = 1 << 53  # integers beyond this are not exact in float64 (plot coordinates)


@dataclass(frozen=True)
class F:
    """What a field means and which values it may take (beyond its type).

    Attributes:
        doc: One line for the reference page.
        lo: Smallest allowed number (ints default to 0).
        hi: Largest allowed number (ints default to 2^53); for floats checked only in strict
            mode (what spectra writes), as older files may hold a share of 1.0000001.
        length: Exact length of a list.
        grid: ``"rect"``: a non-empty rectangular list of lists; ``"square"``: also square.
    """

    doc: str
    lo: float | None = None
    hi: float | None = None
    length: int | None = None
    grid: Literal["rect", "square"] | None = None


Num = float  # any finite JSON number (an int is accepted where a float is declared)
Grid = list[list[Annotated[Num | None, F("φ", lo=0.0, hi=1.0)]]]  # a φ grid


class Settings(TypedDict):
    """``settings``: how the analysis was run."""

    dtype: NotRequired[Annotated[str, F("compute dtype of every ΔW: float32 or float64")]]
    device: NotRequired[Annotated[str, F("where the SVDs ran (cpu, cuda:0, ...)")]]
    top_k: Annotated[int, F("size of the singular subspaces compared by φ", lo=1)]
    modules: NotRequired[Annotated[str | None, F("the --modules regex, or null for all")]]
    exclude: NotRequired[Annotated[str, F("the --exclude regex (absent when not given)")]]
    against_base: NotRequired[
        Annotated[bool, F("base metrics (amplification, intruders) computed")]
    ]
    intruders: NotRequired[Annotated[str, F("intruder dimensions asked: auto, always or never")]]
    intruders_run: NotRequired[Annotated[bool, F("intruder dimensions computed in this run")]]
    intruder_pairs: NotRequired[Annotated[int, F("(module, checkpoint) pairs with a base weight")]]
    intruder_estimated_seconds: NotRequired[
        Annotated[Num, F("estimated time of their SVDs (2 threads; decides auto)", lo=0.0)]
    ]
    unrelated_threshold: NotRequired[
        Annotated[Num, F("median ‖ΔW‖_F/‖W0‖_F from which base and CKPT look unrelated", lo=0.0)]
    ]
    intruder_k: NotRequired[Annotated[int, F("top-k vectors of W0+ΔW tested for intrusion", lo=1)]]
    intruder_eps: NotRequired[Annotated[Num, F("intruder when max |cos| against W0 is below this")]]
    similarity: NotRequired[Annotated[bool, F("pairwise subspace similarity computed")]]
    svd: NotRequired[Annotated[str, F("exact or randomized")]]
    oversample: NotRequired[Annotated[int, F("randomized SVD only: extra random columns p")]]
    power_iters: NotRequired[Annotated[int, F("randomized SVD only: power iterations q")]]
    seed: NotRequired[Annotated[int, F("randomized SVD only: seed of the test matrix")]]


class BaseRef(TypedDict):
    """``base``: the base checkpoint (null when none was given)."""

    path: Annotated[str, F("the path as given")]


class InputInfo(TypedDict):
    """``inputs[i]``: one checkpoint, in the order given."""

    label: Annotated[str, F("its name in every table, figure and similarity pair")]
    path: NotRequired[Annotated[str, F("the path as given")]]
    kind: NotRequired[Annotated[str, F("full, lora, multilora, ... (detected or forced)")]]
    config: NotRequired[Annotated[Any, F("the adapter config as read (any JSON)")]]


class Metrics(TypedDict):
    """``modules[i].metrics``: dominance metrics of one ΔW (README, "What each number means"; docs/json.md)."""

    top1_energy: NotRequired[Annotated[Num | None, F("σ1²/Σσ²; null when ΔW = 0", 0.0, 1.0)]]
    top4_energy: NotRequired[Annotated[Num | None, F("Σ_{i≤4} σi²/Σσ²", 0.0, 1.0)]]
    topr_energy: NotRequired[Annotated[Num | None, F("Σ_{i≤r} σi²/Σσ², r = r_for_topr", 0.0, 1.0)]]
    r_for_topr: NotRequired[Annotated[int | None, F("r of topr_energy (the inner rank R)")]]
    effective_rank: NotRequired[Annotated[Num | None, F("exp(entropy of σ/Σσ) (Roy & Vetterli)")]]
    stable_rank: NotRequired[Annotated[Num | None, F("Σσ²/σ1²")]]
    spectral_entropy: NotRequired[Annotated[Num | None, F("entropy of σ²/Σσ² / log m")]]
    frobenius_norm: NotRequired[Annotated[Num | None, F("‖ΔW‖_F")]]
    spectral_norm: NotRequired[Annotated[Num | None, F("σ1")]]
    numerical_rank: NotRequired[Annotated[int | None, F("#{σ > σ1·max(out, in)·eps}")]]
    k90: NotRequired[Annotated[int | None, F("smallest k with top-k energy share ≥ 0.90")]]
    k95: NotRequired[Annotated[int | None, F("smallest k with top-k energy share ≥ 0.95")]]
    k99: NotRequired[Annotated[int | None, F("smallest k with top-k energy share ≥ 0.99")]]
    utilisation: NotRequired[
        Annotated[Num | None, F("effective rank / R, adapters only (null for dense)", lo=0.0)]
    ]
    nonfinite: NotRequired[Annotated[bool, F("the spectrum has NaN/Inf")]]
    relative_norm: NotRequired[Annotated[Num | None, F("‖ΔW‖_F / ‖W0‖_F (with a base)", lo=0.0)]]
    relative_spectral_norm: NotRequired[
        Annotated[Num | None, F("σ1(ΔW) / σ1(W0), σ1(W0) by block Lanczos (with a base)", lo=0.0)]
    ]


class BaseMetrics(TypedDict):
    """``modules[i].base_metrics``: measures against W0 (null without a base)."""

    amplification: NotRequired[Annotated[Num | None, F("‖ΔW‖_F / ‖Uᵀ W0 V‖_F", lo=0.0)]]
    amplification_r: NotRequired[Annotated[int | None, F("r of U, V (R, or 16 for dense)")]]
    intruder_count: NotRequired[Annotated[int | None, F("intruder dimensions among the top k")]]
    intruder_energy: NotRequired[Annotated[Num | None, F("their Σσ² / Σσ² of W0+ΔW", 0.0, 1.0)]]
    intruder_k: NotRequired[Annotated[int | None, F("k tested")]]
    intruder_eps: NotRequired[Annotated[Num | None, F("ε used")]]
    intruder_max_cos: NotRequired[
        Annotated[list[Num | None], F("per top vector of W0+ΔW: max |cos| against W0's")]
    ]


class MultiLoRABlock(TypedDict):
    """``modules[i].multilora``: the n parallel modules of a MultiLoRA layer (else null)."""

    n: NotRequired[Annotated[int, F("number of parallel modules", lo=1)]]
    r: NotRequired[Annotated[int, F("rank of each", lo=1)]]
    phi_left: Annotated[Grid, F("n × n φ(r, r) between the modules' left subspaces", grid="square")]
    phi_right: Annotated[Grid, F("n × n φ(r, r), right subspaces", grid="square")]
    scaling_norms: NotRequired[Annotated[list[Num | None], F("‖s_i‖ per parallel module")]]
    scaling: NotRequired[Annotated[Any, F("the learned scaling s_i as stored")]]


class ModuleRow(TypedDict):
    """``modules[i]``: one module of one checkpoint."""

    module: Annotated[str, F("module path in the base model")]
    label: Annotated[str, F("the checkpoint's label")]
    kind: NotRequired[Annotated[str, F("the checkpoint's kind")]]
    stack: NotRequired[
        Annotated[str, F('encoder, decoder, text_model, down_blocks.1, ...; "" for one stack')]
    ]
    layer: NotRequired[
        Annotated[
            int | None,
            F("layer index within its stack (spectra/layout.py); null: none", hi=1 << 31),
        ]
    ]
    module_type: Annotated[str, F("the path after the layer index (the path itself if none)")]
    shape: Annotated[list[Annotated[int, F("side", hi=MAX_SIDE)]], F("[out, in]", length=2)]
    rank: Annotated[int, F("inner rank R of a factored ΔW, min(out, in) of a dense one")]
    notes: NotRequired[Annotated[list[str], F("what to know about this row, in words")]]
    singular_values: Annotated[
        list[Annotated[Num | None, F("σ", lo=0.0)]], F("descending; all for dense, R for factored")
    ]
    structural_zeros: NotRequired[
        Annotated[int, F("zeros of the full spectrum not listed", hi=MAX_SIDE)]
    ]
    truncated: NotRequired[Annotated[bool, F("randomized SVD: only the top values computed")]]
    metrics: NotRequired[Annotated[Metrics | None, F("dominance metrics; null when nonfinite")]]
    base_metrics: NotRequired[Annotated[BaseMetrics | None, F("against W0; null without a base")]]
    multilora: NotRequired[Annotated[MultiLoRABlock | None, F("MultiLoRA modules; else null")]]
    nonfinite: NotRequired[Annotated[bool, F("ΔW or its SVD has NaN/Inf: left out of every mean")]]


class SimilarityRow(TypedDict):
    """``similarity[i]``: one module, one pair of checkpoints (a listed before b), one side."""

    module: Annotated[str, F("module path")]
    a: Annotated[str, F("label of the first checkpoint")]
    b: Annotated[str, F("label of the second")]
    side: Annotated[Literal["left", "right"], F("left = output side (U), right = input (V)")]
    k: NotRequired[Annotated[int, F("grid size: min(top_k, numerical ranks of both)", lo=1)]]
    phi: Annotated[Grid, F("phi[i-1][j-1] = φ(i, j): a's top-i vs b's top-j", grid="rect")]
    principal_angles: NotRequired[Annotated[list[Num | None], F("θ = arccos σ(UaᵀUb), radians")]]
    grassmann_distance: NotRequired[Annotated[Num | None, F("‖θ‖₂")]]


class PhiPair(TypedDict):
    """``summary[i].mean_phi[other]``: mean φ(k, k) against another checkpoint, over the
    modules where both have a finite, non-zero ΔW (φ is undefined elsewhere)."""

    left: NotRequired[Annotated[Num | None, F("left side, in [0, 1]", lo=0.0, hi=1.0)]]
    right: NotRequired[Annotated[Num | None, F("right side, in [0, 1]", lo=0.0, hi=1.0)]]
    modules: NotRequired[Annotated[int, F("modules in the left mean (the right one alike)")]]


class SummaryRow(TypedDict):
    """``summary[i]``: one checkpoint. Every mean is over its changed modules: finite,
    non-zero ΔW (``changed_modules`` of them); a metric its SVD route did not compute (null,
    e.g. effective rank with ``--svd randomized``) is left out of that mean."""

    label: Annotated[str, F("the checkpoint's label")]
    kind: NotRequired[Annotated[str, F("its kind")]]
    modules: NotRequired[Annotated[int, F("modules analysed")]]
    changed_modules: NotRequired[Annotated[int, F("modules in the means: finite, ΔW ≠ 0")]]
    mean_top1_energy: Annotated[Num | None, F("mean top-1 energy share, in [0, 1]", lo=0.0, hi=1.0)]
    mean_effective_rank: Annotated[Num | None, F("mean effective rank")]
    mean_stable_rank: Annotated[Num | None, F("mean stable rank")]
    mean_k90: NotRequired[Annotated[Num | None, F("mean k90 (energy rank at τ = 0.90)")]]
    mean_k95: NotRequired[Annotated[Num | None, F("mean k95")]]
    mean_k99: NotRequired[Annotated[Num | None, F("mean k99")]]
    mean_utilisation: NotRequired[
        Annotated[Num | None, F("mean effective rank / R (adapters; null for dense)")]
    ]
    mean_phi: Annotated[dict[str, PhiPair], F("other label → mean φ(k, k) per side")]
    nonfinite_modules: NotRequired[Annotated[int, F("modules whose ΔW has NaN/Inf")]]
    mean_relative_norm: NotRequired[
        Annotated[Num | None, F("mean ‖ΔW‖_F / ‖W0‖_F (null without a base)", lo=0.0)]
    ]
    median_relative_norm: NotRequired[
        Annotated[Num | None, F("median ‖ΔW‖_F / ‖W0‖_F (the unrelated-model check)", lo=0.0)]
    ]
    mean_relative_spectral_norm: NotRequired[
        Annotated[Num | None, F("mean σ1(ΔW) / σ1(W0) (null without a base)", lo=0.0)]
    ]
    unchanged_modules: NotRequired[Annotated[int, F("modules with ΔW = 0 (not in the means)")]]
    unchanged: NotRequired[Annotated[list[str], F("their module paths")]]
    nonfinite: NotRequired[Annotated[list[str], F("module paths whose ΔW has NaN/Inf")]]


class Skipped(TypedDict):
    """``skipped[label]``: what one checkpoint's reader left out."""

    skipped_1d: Annotated[int, F("1-D tensors (biases, norms) not analysed")]
    only_in_base: Annotated[list[str], F("keys only in the base (not compared)")]
    only_in_tuned: Annotated[list[str], F("keys only in the checkpoint (not compared)")]
    notes: Annotated[list[str], F("what the reader noticed, in words")]


class Result(TypedDict):
    """The whole result (``compare --json``, ``report/results.json``, ``diagnose --json``)."""

    spectra_version: NotRequired[Annotated[str, F("version that wrote it")]]
    settings: Annotated[Settings, F("how the analysis was run")]
    base: NotRequired[Annotated[BaseRef | None, F("the base checkpoint, or null")]]
    inputs: Annotated[list[InputInfo], F("the checkpoints, in order")]
    modules: Annotated[list[ModuleRow], F("one row per module per checkpoint")]
    similarity: Annotated[list[SimilarityRow], F("one row per module, pair and side")]
    summary: Annotated[list[SummaryRow], F("one row per checkpoint")]
    skipped: NotRequired[Annotated[dict[str, Skipped], F("label → what its reader left out")]]
    diagnosis: NotRequired[Annotated[Any, F("diagnose --json only: the verdicts")]]
