"""The CUDA path (``device=DEV``) against the CPU and float64 references.

Skipped without a usable CUDA device (CI has none); run on a GPU machine with
``python -m pytest tests/gpu``. Every test compares what the GPU computed with an independent
answer: chosen singular values, float64 CPU references, or the CPU run of the same analysis.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from spectra.analysis import AnalysisOptions, analyze
from spectra.engine import spectrum, svd_dense, svd_factored
from spectra.engine.randomized import randomized_svd
from spectra.multilora.config import MultiLoRAConfig
from spectra.multilora.layer import MultiLoRALinear
from spectra.update import ModuleUpdate
from tests.engine.conftest import _with_spectrum

# SPECTRA_TEST_DEVICE=cpu runs the same checks on the CPU (to test the tests without a GPU)
DEV = os.environ.get("SPECTRA_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(
    DEV.startswith("cuda") and not torch.cuda.is_available(), reason="needs a CUDA device"
)

CHOSEN = [9.0, 5.0, 2.5, 1.0, 0.25]


def _rel(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got.double().cpu() - ref.double().cpu()).abs().max() / ref.double().abs().max())


@pytest.mark.parametrize("backend", ["auto", "gram", "torch"])
@pytest.mark.parametrize("shape", [(300, 120), (120, 300)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dense_values_on_cuda(backend, shape, dtype) -> None:
    a = _with_spectrum(CHOSEN, *shape, seed=1)[0].to(dtype)
    s, u, v = svd_dense(a, device=DEV, backend=backend)
    assert s.device.type == "cpu" and s.dtype == dtype and u is None and v is None
    expected = torch.tensor(CHOSEN + [0.0] * (min(shape) - len(CHOSEN)))
    assert _rel(s, expected) < (1e-5 if dtype == torch.float32 else 1e-12)


@pytest.mark.parametrize("shape", [(300, 120), (120, 300)])
@pytest.mark.parametrize("factored", [False, True])
def test_top_vectors_on_cuda(shape, factored) -> None:
    a, u, v = _with_spectrum(CHOSEN, *shape, seed=5)
    sv = torch.tensor(CHOSEN, dtype=torch.float64)
    upd = (
        ModuleUpdate("m", shape, left=(u * sv).float(), right=v.T.float())
        if factored
        else ModuleUpdate("m", shape, dense=a.float())
    )
    spec = spectrum(upd, vectors=3, device=DEV)
    assert spec.U is not None and spec.V is not None and spec.U.device.type == "cpu"
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose((spec.U.double().T @ u[:, :3]).abs(), eye, atol=1e-5)
    assert torch.allclose((spec.V.double().T @ v[:, :3]).abs(), eye, atol=1e-5)
    assert torch.allclose(spec.U.double().T @ a @ spec.V.double(), torch.diag(sv[:3]), atol=1e-4)


def test_factored_on_cuda_equals_dense_float64() -> None:
    gen = torch.Generator().manual_seed(3)
    left, right = torch.randn(200, 24, generator=gen), torch.randn(24, 150, generator=gen)
    ref = torch.linalg.svdvals(left.double() @ right.double())[:24]
    s, _, _ = svd_factored(left, right, device=DEV)
    assert _rel(s, ref) < 1e-6


def test_randomized_on_cuda_matches_cpu_and_exact() -> None:
    a = _with_spectrum([0.9**i for i in range(100)], 400, 300, seed=4)[0].float()
    s_gpu, u_gpu, _ = randomized_svd(a, 8, device=DEV)
    s_cpu, _, _ = randomized_svd(a, 8, device="cpu")
    exact = torch.linalg.svdvals(a.double())[:8]
    assert s_gpu.device.type == "cpu" and u_gpu is not None
    assert _rel(s_gpu, exact) < 1e-5 and _rel(s_gpu, s_cpu) < 1e-5


def _numbers(obj, path=""):
    """Every number in a result, by its JSON path (settings and timings left out)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k not in ("settings", "spectra_version", "device", "elapsed_s"):
                yield from _numbers(v, f"{path}/{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{path}/{i}")
    elif isinstance(obj, int | float) and not isinstance(obj, bool):
        yield path, float(obj)


def test_analysis_on_cuda_equals_cpu(ckpts) -> None:
    """Full, LoRA and MultiLoRA with base metrics and similarity: the same numbers."""
    runs = {
        dev: analyze(
            ckpts.base,
            [ckpts.full, ckpts.lora, ckpts.multilora],
            options=AnalysisOptions(device=dev, top_k=4),
        )  # fmt: skip
        for dev in ("cpu", DEV)
    }
    cpu, gpu = (dict(_numbers(r)) for r in (runs["cpu"], runs[DEV]))
    assert cpu.keys() == gpu.keys() and len(cpu) > 100
    scale = {p: max(abs(v), 1e-3) for p, v in cpu.items()}
    worst = max(abs(cpu[p] - gpu[p]) / scale[p] for p in cpu)
    assert worst < 1e-3, worst  # intruder/φ values near ties are the loosest


def test_cli_compare_on_cuda(ckpts, run_cli, tmp_path) -> None:
    out = tmp_path / "r.json"
    res = run_cli("compare", ckpts.base, ckpts.lora, ckpts.multilora, "--device", DEV,
                  "--json", out, "-q")  # fmt: skip
    assert res.code == 0, res.err
    data = json.loads(out.read_text())
    assert data["settings"]["device"].startswith(DEV)
    assert {m["kind"] for m in data["modules"]} >= {"lora", "multilora"}


def test_multilora_layer_on_cuda_matches_cpu() -> None:
    torch.manual_seed(0)
    cfg = MultiLoRAConfig(r=2, n=4, lora_alpha=4.0)
    cpu = MultiLoRALinear(torch.nn.Linear(32, 24), cfg)
    with torch.no_grad():
        for p in cpu.parameters():
            p.add_(0.1 * torch.randn_like(p))
    gpu = MultiLoRALinear(torch.nn.Linear(32, 24), cfg).to(DEV)
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randn(5, 32)
    y_cpu, y_gpu = cpu(x), gpu(x.to(DEV))
    assert torch.allclose(y_gpu.cpu(), y_cpu, atol=1e-5)
    y_gpu.square().sum().backward()
    assert all(p.grad is not None for p in gpu.parameters() if p.requires_grad)
    assert torch.allclose(gpu.get_delta_weight().cpu(), cpu.get_delta_weight(), atol=1e-5)
    w = gpu.base_layer.weight.detach().clone()
    gpu.merge(safe_merge=True)
    assert torch.allclose(gpu(x.to(DEV)).cpu(), y_cpu, atol=1e-5)
    gpu.unmerge()
    assert torch.equal(gpu.base_layer.weight, w)
