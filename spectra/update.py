"""The weight update ΔW of one adapted matrix, dense or factored.

Every loader produces :class:`ModuleUpdate` objects; the engine consumes them. A factored update
keeps its two factors (ΔW = left @ right, scaling already folded into ``left``) and is never
multiplied out unless :meth:`ModuleUpdate.materialize` is called.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

Kind = Literal["full", "lora", "multilora", "dora", "loha", "lokr", "kohya"]


@dataclass(frozen=True)
class ModuleUpdate:
    """ΔW of one module, in the layout its base weight is stored in.

    That is ``nn.Linear``'s (out × in) for almost every module; GPT-2 ``Conv1D`` weights
    (PEFT ``fan_in_fan_out``) are stored (in × out) and embeddings (num_embeddings × dim), and
    their ΔW keeps that layout so that it equals ``W_tuned − W_base`` key for key (the reader
    says so in the module's ``notes``). Conv kernels are flattened to (out, in·kh·kw).

    Exactly one representation is set:

    * dense: ``dense`` is the (out, in) matrix (full fine-tuning, DoRA, merged adapters);
    * factored: ΔW = ``left`` @ ``right`` with ``left``: (out, R), ``right``: (R, in) and any
      scaling (α/r, MultiLoRA's s_i) already folded into ``left``.

    Attributes:
        module: Module path as in the base model, without ``.weight``
            (e.g. ``encoder.layer.0.attention.self.query``).
        shape: (out, in) of ΔW (rows, columns of the stored layout).
        dense: (out, in) ΔW, or None for a factored update.
        left: (out, R) left factor, or None for a dense update.
        right: (R, in) right factor, or None for a dense update.
        groups: For MultiLoRA, the inner size of each of the n parallel modules, in order
            (sum = R): module i owns columns ``left[:, o_i:o_i+g_i]`` and rows
            ``right[o_i:o_i+g_i]``. Empty for other kinds.
        scaling: For MultiLoRA, the learned scaling s_i: (n, out) for vector scaling or (n,)
            for scalar scaling, as stored (α/r not included). None otherwise.
        notes: Facts a user should see about this module (e.g. an ignored ``lora_B.bias``).
    """

    module: str
    shape: tuple[int, int]
    dense: torch.Tensor | None = None
    left: torch.Tensor | None = None
    right: torch.Tensor | None = None
    groups: tuple[int, ...] = ()
    scaling: torch.Tensor | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        out, inp = self.shape
        if self.dense is not None:
            if self.left is not None or self.right is not None:
                raise ValueError(f"{self.module}: set either dense or left/right, not both")
            if tuple(self.dense.shape) != (out, inp):
                raise ValueError(f"{self.module}: dense {tuple(self.dense.shape)} != {self.shape}")
        else:
            if self.left is None or self.right is None:
                raise ValueError(f"{self.module}: a factored update needs both left and right")
            if self.left.ndim != 2 or self.right.ndim != 2:
                raise ValueError(f"{self.module}: factors must be 2-D")
            if self.left.shape[0] != out or self.right.shape[1] != inp:
                raise ValueError(
                    f"{self.module}: factors {tuple(self.left.shape)} @ "
                    f"{tuple(self.right.shape)} do not give {self.shape}"
                )
            if self.left.shape[1] != self.right.shape[0]:
                raise ValueError(
                    f"{self.module}: inner sizes differ: left {tuple(self.left.shape)}, "
                    f"right {tuple(self.right.shape)}"
                )
            if self.groups and sum(self.groups) != self.left.shape[1]:
                raise ValueError(f"{self.module}: groups {self.groups} do not sum to R")

    @property
    def factored(self) -> bool:
        """True when ΔW is held as left @ right."""
        return self.dense is None

    @property
    def inner_rank(self) -> int:
        """R for a factored update (an upper bound on rank), min(out, in) for a dense one."""
        if self.factored:
            assert self.left is not None
            return int(self.left.shape[1])
        return min(self.shape)

    @property
    def dtype(self) -> torch.dtype:
        t = self.dense if self.dense is not None else self.left
        assert t is not None
        return t.dtype

    def materialize(self) -> torch.Tensor:
        """ΔW as an (out, in) tensor. For a factored update this forms left @ right."""
        if self.dense is not None:
            return self.dense
        assert self.left is not None and self.right is not None
        return self.left @ self.right

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> ModuleUpdate:
        """A copy with every tensor moved/cast (dtype only applies to floating tensors)."""

        def conv(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device=device, dtype=dtype)

        return ModuleUpdate(
            module=self.module,
            shape=self.shape,
            dense=conv(self.dense),
            left=conv(self.left),
            right=conv(self.right),
            groups=self.groups,
            scaling=conv(self.scaling),
            notes=self.notes,
        )
