"""The reference MultiLoRA layer: n LoRA modules in parallel around one frozen ``nn.Linear``.

    y = W0 x + b + (α / r_m) Σ_{i=1..n} s_i ⊙ (B_i A_i dropout(x))

A_i: (r_m, in) and B_i: (out, r_m) are both Kaiming-uniform (a = √5, as ``nn.Linear``); unlike
LoRA, B_i is not zero. The learned scaling s_i ((out,) or a scalar) starts at zero, which is
what makes ΔW = 0 at step 0. This follows the public MultiLoRA re-implementation of the MTL-LoRA
paper (arXiv 2410.09437); docs/multilora.md lists the choices.

The n modules are one factor pair (the stacking of the on-disk format):

    left  = (α / r_m) · [s_1 ⊙ B_1, …, s_n ⊙ B_n]   (out, n·r_m)
    right = [A_1; …; A_n]                             (n·r_m, in)

so the forward is two matrix products with inner size n·r_m, the cost of one LoRA of rank
n·r_m, and the sum over modules happens inside the second product's contraction; no Python loop
over the modules.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from spectra.multilora.config import MultiLoRAConfig
from spectra.multilora.format import stack_factors


class MultiLoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus n parallel LoRA modules with learned scaling.

    Args:
        base_layer: The layer to adapt; kept as ``self.base_layer`` with its parameters frozen.
        config: Rank, n, α, dropout and scaling shape.

    Attributes:
        multilora_A: (n, r_m, in), A_i stacked.
        multilora_B: (n, out, r_m), B_i stacked.
        multilora_scaling: (n, out) for ``scaling="vector"``, (n,) for ``"scalar"``; zero at init.
        merged: True while ΔW is folded into ``base_layer.weight``.

    The adapter parameters are created on the base layer's device in the base dtype promoted
    to at least float32 (a bf16/fp16 base gets float32 adapters, as PEFT's default
    ``autocast_adapter_dtype``): small updates to half-precision adapters round away.

    Raises:
        TypeError: ``base_layer`` is not an ``nn.Linear``.
    """

    def __init__(self, base_layer: nn.Linear, config: MultiLoRAConfig) -> None:
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(f"MultiLoRALinear wraps nn.Linear, got {type(base_layer).__name__}")
        self.base_layer = base_layer
        self.base_layer.requires_grad_(False)
        self.config = config
        n, r = config.n, config.module_rank
        out, inp = base_layer.out_features, base_layer.in_features
        weight = base_layer.weight
        factory = {
            "device": weight.device,
            "dtype": torch.promote_types(weight.dtype, torch.float32),
        }
        self.multilora_A = nn.Parameter(torch.empty(n, r, inp, **factory))
        self.multilora_B = nn.Parameter(torch.empty(n, out, r, **factory))
        scaling_shape = (n, out) if config.scaling == "vector" else (n,)
        self.multilora_scaling = nn.Parameter(torch.zeros(scaling_shape, **factory))
        self.dropout: nn.Module = (
            nn.Dropout(config.lora_dropout) if config.lora_dropout > 0 else nn.Identity()
        )
        self.merged = False
        # W0 as it was before merge(); a buffer so that .to() moves it, not saved in state_dict.
        self._unmerged_weight: torch.Tensor | None
        self.register_buffer("_unmerged_weight", None, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """A_i, B_i ~ Kaiming-uniform(a=√5), i.e. U(±1/√fan_in) per module; s_i = 0."""
        with torch.no_grad():
            # Per module: on the stacked 3-D tensor torch would take fan_in = r_m·in (or out·r_m).
            for i in range(self.config.n):
                nn.init.kaiming_uniform_(self.multilora_A[i], a=math.sqrt(5))  # fan_in = in
                nn.init.kaiming_uniform_(self.multilora_B[i], a=math.sqrt(5))  # fan_in = r_m
            self.multilora_scaling.zero_()

    def _factors(self, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """ΔW = left @ right with the α/r_m and s_i folded into left.

        Args:
            dtype: Widen each parameter to this dtype before any arithmetic; None keeps theirs.

        Returns:
            left: (out, n·r_m) = (α/r_m)·[s_1 ⊙ B_1, …, s_n ⊙ B_n];
            right: (n·r_m, in) = [A_1; …; A_n].
        """
        a, b, s = self.multilora_A, self.multilora_B, self.multilora_scaling
        if dtype is not None:
            a, b, s = a.to(dtype), b.to(dtype), s.to(dtype)
        return stack_factors(a, b, s, self.config.scale)

    def get_delta_weight(self) -> torch.Tensor:
        """ΔW = (α/r_m) Σ_i diag(s_i) B_i A_i, the one place the update is formed.

        Computed in the parameters' dtype promoted to at least float32, each operand widened
        first.

        Returns:
            (out, in) tensor on the parameters' device.
        """
        dtype = torch.promote_types(self.multilora_A.dtype, torch.float32)
        left, right = self._factors(dtype)
        return left @ right  # (out, n·r_m) @ (n·r_m, in) -> (out, in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """y = base_layer(x) + x̃ rightᵀ leftᵀ, x̃ = dropout(x); the base layer only when merged.

        Args:
            x: (..., in).

        Returns:
            (..., out) in the base layer's output dtype.
        """
        result = self.base_layer(x)  # (..., out)
        if self.merged:
            return result
        left, right = self._factors()  # (out, n·r_m), (n·r_m, in)
        h = self.dropout(x.to(right.dtype)) @ right.T  # (..., n·r_m): A_i x̃ for all i at once
        update = h @ left.T  # (..., out): Σ_i (α/r_m) s_i ⊙ B_i A_i x̃, summed in the contraction
        return result + update.to(result.dtype)

    def merge(self, safe_merge: bool = False) -> None:
        """Fold ΔW into ``base_layer.weight``: W ← W + ΔW, rounded once to W's dtype.

        The weight as it was is kept aside (one extra copy of W) so that :meth:`unmerge`
        restores it bit for bit; subtracting ΔW again would not (floating-point addition is
        not invertible). While merged, forward is the base layer alone (no adapter gradients).

        Args:
            safe_merge: Check the merged weight for NaN/inf before writing it.

        Raises:
            RuntimeError: Already merged.
            ValueError: ``safe_merge`` and the merged weight is not finite (W is left as it was).
        """
        if self.merged:
            raise RuntimeError(
                "this MultiLoRALinear is already merged; call unmerge() before merging again"
            )
        weight = self.base_layer.weight
        with torch.no_grad():
            delta = self.get_delta_weight()  # (out, in), float32 or wider
            merged = (weight.to(delta.dtype) + delta).to(weight.dtype)
            if safe_merge and not torch.isfinite(merged).all():
                raise ValueError(
                    "merging this MultiLoRA layer gives NaN/inf weights; the adapter "
                    "(multilora_A/B/scaling) holds non-finite or overflowing values"
                )
            self._unmerged_weight = weight.detach().clone()
            weight.copy_(merged)
        self.merged = True

    def unmerge(self) -> None:
        """Restore ``base_layer.weight`` exactly as it was before :meth:`merge`.

        Raises:
            RuntimeError: Not merged.
        """
        if not self.merged or self._unmerged_weight is None:
            raise RuntimeError("this MultiLoRALinear is not merged; nothing to unmerge")
        with torch.no_grad():
            self.base_layer.weight.copy_(self._unmerged_weight)
        self._unmerged_weight = None
        self.merged = False

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"n={c.n}, r={c.module_rank}, lora_alpha={c.lora_alpha}, scaling={c.scaling!r}, "
            f"merged={self.merged}"
        )
