"""Analysis results built from chosen spectra, following the result schema exactly.

Built through the result's types (``spectra.result_types``: ModuleRow, SimilarityRow, ...);
metrics, φ grids and the summary come from the real engine/analysis functions
(``dominance_metrics``, ``phi_grid``, ``summarize``), so the dicts are what
``spectra.analysis.analyze`` would write for updates with these singular values and vectors
(``make_result`` checks them strictly against the types).
Shared by tests/plots, tests/report and tests/test_diagnose.py; the latter two put
tests/plots on sys.path to import it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from spectra.analysis import AnalysisOptions, analyze, module_layer
from spectra.engine.metrics import dominance_metrics
from spectra.engine.subspace import grassmann_distance, phi_grid, principal_angles
from spectra.engine.svd import Spectrum
from spectra.io.result_schema import check_result
from spectra.result_types import (
    BaseMetrics,
    BaseRef,
    InputInfo,
    ModuleRow,
    MultiLoRABlock,
    Result,
    Settings,
    SimilarityRow,
    Skipped,
)
from spectra.summary import summarize

LAYERS = 3
TYPES = {"attention.query": (48, 48), "mlp.dense": (64, 48)}  # module type → (out, in)
TOP_K = 4
LORA_R = 4
ML_N, ML_R = 2, 2  # MultiLoRA: n parallel modules of rank r → R = 4
LORA_VALUES = [8.0, 1.0, 0.5, 0.25]  # top-1 energy 64 / 65.3125 ≈ 0.98: dominated
ML_VALUES = [3.0, 2.5, 2.0, 1.5]  # top-1 energy 9 / 21.5 ≈ 0.42: not dominated


def module_names() -> list[str]:
    return [f"encoder.layer.{i}.{t}" for i in range(LAYERS) for t in TYPES]


def bell_values(shape: tuple[int, int], seed: int) -> list[float]:
    """Singular values of a seeded Gaussian matrix (Marchenko–Pastur: bell-ish σ/σ_1)."""
    rng = np.random.default_rng(seed)
    return np.linalg.svd(rng.standard_normal(shape), compute_uv=False).tolist()


def module_row(
    module: str,
    label: str,
    kind: str,
    values: list[float],
    shape: tuple[int, int],
    *,
    rank: int | None = None,
    base_metrics: dict[str, Any] | None = None,
    multilora: dict[str, Any] | None = None,
) -> ModuleRow:
    """One ``modules`` row; ``rank`` = inner rank R (factored) or None for dense."""
    full = min(shape)
    rank = full if rank is None else rank
    spec = Spectrum(
        values=torch.tensor(values, dtype=torch.float64),
        full_size=full,
        structural_zeros=full - len(values),
        shape=shape,
    )
    # an inner rank below min(out, in) is a factored update (an adapter): utilisation = erank / R
    inner = rank if rank < full else None
    metrics = dominance_metrics(spec, shape=shape, inner_rank=inner)
    layer, mtype = module_layer(module)
    return ModuleRow(
        module=module,
        label=label,
        kind=kind,
        stack="",  # one stack (tests/test_layout.py covers encoder–decoder layouts)
        layer=layer,
        module_type=mtype,
        shape=list(shape),
        rank=rank,
        notes=[],
        singular_values=[float(v) for v in values],
        structural_zeros=full - len(values),
        truncated=False,
        metrics=metrics,
        base_metrics=base_metrics,
        multilora=multilora,
        nonfinite=False,
    )


def base_block(amplification: float, intruders: int, energy: float) -> BaseMetrics:
    return BaseMetrics(
        amplification=amplification,
        amplification_r=LORA_R,
        intruder_count=intruders,
        intruder_energy=energy,
        intruder_k=10,
        intruder_eps=0.5,
        intruder_max_cos=[0.9] * (10 - intruders) + [0.2] * intruders,
    )


def multilora_block(phi_off: float, scaling_norms: list[float]) -> MultiLoRABlock:
    """n×n φ with ``phi_off`` off the diagonal, 1 on it."""
    phi = [[1.0 if i == j else phi_off for j in range(ML_N)] for i in range(ML_N)]
    return MultiLoRABlock(
        n=ML_N,
        r=ML_R,
        phi_left=phi,
        phi_right=[row[:] for row in phi],
        scaling_norms=scaling_norms,
        scaling=[[s] for s in scaling_norms],
    )


def orthonormal(d: int, k: int, seed: int) -> torch.Tensor:
    """(d, k) float64 orthonormal columns (QR of a seeded Gaussian)."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, k, generator=g, dtype=torch.float64))
    return q


def similarity_row(
    module: str, a: str, b: str, side: Literal["left", "right"], ua: torch.Tensor, ub: torch.Tensor
) -> SimilarityRow:
    return SimilarityRow(
        module=module,
        a=a,
        b=b,
        side=side,
        k=ua.shape[1],
        phi=phi_grid(ua, ub).tolist(),
        principal_angles=principal_angles(ua, ub).tolist(),
        grassmann_distance=float(grassmann_distance(ua, ub)),
    )


def _bases(modules: list[str], labels: list[str]) -> dict[tuple[str, str, str], torch.Tensor]:
    """(module, label, side) → top-k basis; lora and multilora share theirs (φ = 1)."""
    out = {}
    for mi, module in enumerate(modules):
        out_dim, in_dim = TYPES[module_layer(module)[1]]
        for label in labels:
            src = "lora" if label == "multilora" else label
            seed = 1000 * mi + 10 * labels.index(src)
            out[(module, label, "left")] = orthonormal(out_dim, TOP_K, seed)
            out[(module, label, "right")] = orthonormal(in_dim, TOP_K, seed + 5)
    return out


def make_result(*, with_base: bool = True, with_multilora: bool = True) -> Result:
    """full (dense, bell-ish), lora (rank 4 = structural zeros) and optionally multilora."""
    labels = ["full", "lora"] + (["multilora"] if with_multilora else [])
    kinds = {"full": "full", "lora": "lora", "multilora": "multilora"}
    modules = module_names()
    rows: list[ModuleRow] = []
    for mi, module in enumerate(modules):
        shape = TYPES[module_layer(module)[1]]
        rows.append(
            module_row(
                module,
                "full",
                "full",
                bell_values(shape, mi),
                shape,
                base_metrics=base_block(2.0 + mi, 0, 0.0) if with_base else None,
            )
        )
        rows.append(
            module_row(
                module,
                "lora",
                "lora",
                LORA_VALUES,
                shape,
                rank=LORA_R,
                base_metrics=base_block(20.0 + mi, 2, 0.3) if with_base else None,
            )
        )
        if with_multilora:
            rows.append(
                module_row(
                    module,
                    "multilora",
                    "multilora",
                    ML_VALUES,
                    shape,
                    rank=ML_N * ML_R,
                    multilora=multilora_block(0.05 * (mi + 1), [1.0, 0.5 + mi]),
                )
            )
    bases = _bases(modules, labels)
    similarity = [
        similarity_row(m, a, b, side, bases[(m, a, side)], bases[(m, b, side)])
        for m in modules
        for ia, a in enumerate(labels)
        for b in labels[ia + 1 :]
        for side in ("left", "right")
    ]
    inputs = [
        InputInfo(
            label=lab,
            path=f"/ckpt/{lab}",
            kind=kinds[lab],
            config={"r": LORA_R} if lab == "lora" else {},
        )
        for lab in labels
    ]
    result = Result(
        spectra_version="0.1.0",
        settings=Settings(
            dtype="float64",
            device="cpu",
            top_k=TOP_K,
            modules=None,
            against_base=with_base,
            intruder_k=10,
            intruder_eps=0.5,
        ),
        base=BaseRef(path="/ckpt/base") if with_base else None,
        inputs=inputs,
        modules=rows,
        similarity=similarity,
        summary=summarize(
            inputs_meta=[(lab, kinds[lab]) for lab in labels], modules=rows, similarity=similarity
        ),
        skipped={
            lab: Skipped(skipped_1d=0, only_in_base=[], only_in_tuned=[], notes=[])
            for lab in labels
        },
    )
    return check_result(result, "make_result()", strict=True)  # type: ignore[return-value]


def write_lora_adapter(out: Path, values: list[float], seed: int, shape=(32, 24)) -> None:
    """A PEFT-layout adapter for module ``layers.0.q`` whose ΔW = B A has exactly the
    singular values ``values``: B = U diag(σ), A = Vᵀ with orthonormal U, V, and α = r so the
    scaling α/r is 1."""
    from safetensors.torch import save_file

    r = len(values)
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(shape[0], r, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(shape[1], r, generator=g, dtype=torch.float64))
    b = (u * torch.tensor(values, dtype=torch.float64)).contiguous()  # (out, r)
    out.mkdir(parents=True)
    prefix = "base_model.model.layers.0.q"
    tensors = {f"{prefix}.lora_A.weight": v.T.contiguous(), f"{prefix}.lora_B.weight": b}
    save_file(tensors, str(out / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "r": r, "lora_alpha": r, "target_modules": ["q"]}
    (out / "adapter_config.json").write_text(json.dumps(config))


def analyzed_adapters(tmp_path: Path, adapters: dict[str, list[float]]) -> dict[str, Any]:
    """``spectra.analysis.analyze`` of one seeded base and a LoRA adapter per label, each built
    from the given singular values (float64, top_k 4)."""
    from safetensors.torch import save_file

    tmp_path.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    base = {
        "layers.0.q.weight": torch.randn(32, 24, generator=g),
        "layers.0.q.bias": torch.zeros(32),
    }
    save_file(base, str(tmp_path / "base.safetensors"))
    for seed, (label, values) in enumerate(adapters.items(), start=1):
        write_lora_adapter(tmp_path / label, values, seed)
    return analyze(
        tmp_path / "base.safetensors",
        [tmp_path / label for label in adapters],
        options=AnalysisOptions(dtype="float64", top_k=4),
    )
