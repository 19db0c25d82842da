"""MultiLoRALinear: init, forward against a per-module float64 loop, ΔW, merge/unmerge."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from spectra.multilora import MultiLoRAConfig, MultiLoRALinear


def _layer(
    inp: int = 12, out: int = 10, dtype: torch.dtype = torch.float32, **kw: object
) -> MultiLoRALinear:
    base = nn.Linear(inp, out, dtype=dtype)
    return MultiLoRALinear(base, MultiLoRAConfig(**{"r": 3, "n": 4, "lora_alpha": 6.0, **kw}))


def test_parameter_shapes_and_dtypes() -> None:
    layer = _layer(scaling="vector")
    assert layer.multilora_A.shape == (4, 3, 12)
    assert layer.multilora_B.shape == (4, 10, 3)
    assert layer.multilora_scaling.shape == (4, 10)
    assert _layer(scaling="scalar").multilora_scaling.shape == (4,)
    assert _layer(r=8, n=4, parameter_matched=True).multilora_A.shape == (4, 2, 12)
    assert not any(p.requires_grad for p in layer.base_layer.parameters())


def test_init_delta_is_zero_while_a_and_b_are_kaiming_uniform() -> None:
    layer = _layer(inp=64, out=48, r=8, n=4)
    a, b = layer.multilora_A.detach(), layer.multilora_B.detach()
    # Kaiming-uniform(a=√5) per module: U(±1/√fan_in), fan_in = in for A_i, r_m for B_i.
    for t, bound in ((a, 1 / math.sqrt(64)), (b, 1 / math.sqrt(8))):
        assert t.abs().max() <= bound
        assert t.abs().max() > 0.95 * bound  # filled up to the bound, not a narrower law
        assert t.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)
    for i in range(4):  # every module initialised, and differently
        assert torch.count_nonzero(a[i]) == a[i].numel()
        assert torch.count_nonzero(b[i]) == b[i].numel()
    assert not torch.equal(a[0], a[1])
    assert torch.count_nonzero(layer.multilora_scaling) == 0
    assert torch.count_nonzero(layer.get_delta_weight()) == 0


def test_init_output_equals_base_bitwise() -> None:
    layer = _layer()
    x = torch.randn(2, 5, 12)
    assert torch.equal(layer(x), layer.base_layer(x))


def test_init_gradient_flows_to_scaling_only() -> None:
    # left = (α/r_m)·s ⊙ B = 0 at init, so dL/dA = 0 and dL/dB ∝ s = 0: only s moves first.
    layer = _layer()
    layer(torch.randn(7, 12)).square().sum().backward()
    assert torch.count_nonzero(layer.multilora_A.grad) == 0
    assert torch.count_nonzero(layer.multilora_B.grad) == 0
    assert torch.count_nonzero(layer.multilora_scaling.grad) == layer.multilora_scaling.numel()
    assert layer.base_layer.weight.grad is None


@pytest.mark.parametrize(
    ("n", "r", "scaling", "matched"),
    [
        (1, 4, "vector", False),
        (4, 3, "vector", False),
        (4, 3, "scalar", False),
        (16, 2, "vector", False),
        (16, 32, "scalar", True),
    ],
)
def test_forward_and_delta_equal_per_module_loop_float64(
    n: int, r: int, scaling: str, matched: bool, loop_forward, loop_delta, randomize
) -> None:
    layer = _layer(n=n, r=r, scaling=scaling, parameter_matched=matched).double()
    randomize(layer)
    x = torch.randn(3, 5, 12, dtype=torch.float64)
    torch.testing.assert_close(layer(x), loop_forward(layer, x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer.get_delta_weight(), loop_delta(layer), rtol=1e-12, atol=1e-12)


def test_delta_closed_form_singular_values() -> None:
    # A_i = e_iᵀ, B_i = e_i (r_m = 1), scalar s = (3, 5), α = 2: ΔW = 2·diag(3, 5, 0, …).
    layer = _layer(inp=6, out=5, n=2, r=1, lora_alpha=2.0, scaling="scalar")
    with torch.no_grad():
        layer.multilora_A.zero_()
        layer.multilora_B.zero_()
        for i in range(2):
            layer.multilora_A[i, 0, i] = 1.0
            layer.multilora_B[i, i, 0] = 1.0
        layer.multilora_scaling.copy_(torch.tensor([3.0, 5.0]))
    expected = torch.zeros(5, 6)
    expected[0, 0], expected[1, 1] = 6.0, 10.0
    assert torch.equal(layer.get_delta_weight(), expected)
    sv = torch.linalg.svdvals(layer.get_delta_weight().double())
    torch.testing.assert_close(sv[:3], torch.tensor([10.0, 6.0, 0.0], dtype=torch.float64))


class _OpCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def _ops(n: int) -> Counter[str]:
    layer = _layer(n=n, r=2)
    x = torch.randn(4, 12)
    with _OpCounter() as counter:
        layer(x).sum().backward()
    return counter.ops


def test_forward_and_backward_run_the_same_ops_for_any_n() -> None:
    # A Python loop over the modules would make the op count grow with n. (n = 1 differs only
    # in that the stacked reshape is a view there, not a copy.)
    ops_2, ops_16 = _ops(2), _ops(16)
    assert ops_2 == ops_16
    assert ops_16["aten.mm"] + ops_16["aten.addmm"] <= 9  # 3 forward products, ≤ 2 grads each


def test_merged_forward_equals_unmerged_and_is_the_base_layer(randomize) -> None:
    layer = _layer(inp=32, out=24, n=4, r=4)
    randomize(layer)
    x = torch.randn(8, 32)
    y = layer(x)
    layer.merge()
    assert layer.merged
    y_merged = layer(x)
    torch.testing.assert_close(y_merged, y, rtol=1e-5, atol=1e-5)
    assert torch.equal(y_merged, layer.base_layer(x))
    w_expected = layer._unmerged_weight + layer.get_delta_weight()
    assert torch.equal(layer.base_layer.weight, w_expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_merge_unmerge_restores_weight_bitwise(dtype: torch.dtype, randomize) -> None:
    layer = _layer(inp=64, out=64, dtype=dtype, n=4, r=8)
    randomize(layer)
    w0 = layer.base_layer.weight.detach().clone()
    delta = layer.get_delta_weight()
    layer.merge()
    merged = layer.base_layer.weight.detach().clone()
    # Merge rounds once: W + ΔW formed in float32, cast to W's dtype.
    assert torch.equal(merged, (w0.float() + delta).to(dtype))
    layer.unmerge()
    assert not layer.merged
    assert torch.equal(layer.base_layer.weight, w0)
    assert layer._unmerged_weight is None
    # Why the original is kept: subtracting ΔW back is not exact in floating point.
    assert not torch.equal((merged.float() - delta).to(dtype), w0)


def test_bf16_base_gets_float32_adapters_and_bf16_output(randomize) -> None:
    layer = _layer(dtype=torch.bfloat16)
    assert layer.multilora_A.dtype == torch.float32
    randomize(layer)
    assert layer(torch.randn(3, 12, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_merge_twice_and_unmerge_unmerged_refused() -> None:
    layer = _layer()
    with pytest.raises(RuntimeError, match="not merged"):
        layer.unmerge()
    layer.merge()
    with pytest.raises(RuntimeError, match="already merged"):
        layer.merge()


def test_safe_merge_refuses_nan_and_leaves_weight(randomize) -> None:
    layer = _layer()
    randomize(layer)
    with torch.no_grad():
        layer.multilora_B[1, 2, 0] = float("nan")
    w0 = layer.base_layer.weight.detach().clone()
    with pytest.raises(ValueError, match="NaN"):
        layer.merge(safe_merge=True)
    assert not layer.merged
    assert torch.equal(layer.base_layer.weight, w0)
    layer.merge()  # without the check the NaN goes in, as documented
    assert torch.isnan(layer.base_layer.weight).any()


def test_dropout_only_in_training(loop_forward, randomize) -> None:
    layer = _layer(lora_dropout=0.5).double()
    randomize(layer)
    x = torch.randn(16, 12, dtype=torch.float64)
    layer.eval()
    torch.testing.assert_close(layer(x), loop_forward(layer, x), rtol=1e-12, atol=1e-12)
    layer.train()
    assert not torch.allclose(layer(x), loop_forward(layer, x))


def test_refuses_non_linear_and_shows_settings_in_repr() -> None:
    with pytest.raises(TypeError, match="nn.Linear"):
        MultiLoRALinear(nn.Conv1d(2, 2, 1), MultiLoRAConfig())  # type: ignore[arg-type]
    assert "n=4, r=3, lora_alpha=6.0, scaling='vector', merged=False" in repr(_layer())
