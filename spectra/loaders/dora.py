"""DoRA (Liu et al. 2024, arXiv 2402.09353) as PEFT computes it: the effective ΔW of one module.

A DoRA module stores a LoRA pair (B, A) with scaling s and a magnitude vector m with one entry
per output channel. PEFT merges it as (peft 0.21, ``peft/tuners/lora/variants.py``
``DoraLinearVariant.merge_safe`` with ``peft/tuners/lora/dora.py``
``DoraLinearLayer.get_weight_norm``)::

    W' = (m / ‖V‖) ⊙ V,   V = W0 + s·B·A,

with ‖V‖ the L2 norm of each **output channel** of V (one number per output), so

    ΔW = W' − W0 = (m / ‖V‖ − 1) ⊙ W0 + (m / ‖V‖) ⊙ s·B·A          (dense: needs W0).

Which axis is the output channel, in the layout the base weight is stored in:

* ``nn.Linear`` (out, in): rows; ``get_weight_norm`` takes ``torch.linalg.norm(V, dim=1)``
  after ``transpose(weight, fan_in_fan_out)`` has put the weight in (out, in);
* GPT-2 ``Conv1D`` (``fan_in_fan_out``, stored (in, out)): columns of the stored weight (the
  same norm, taken after that transpose; the factor is transposed back to (1, out));
* ``nn.Embedding`` (num_embeddings, dim): columns (``DoraEmbeddingLayer`` is built with
  ``fan_in_fan_out=True``: one norm per embedding dimension, factor ``view(1, -1)``);
* conv (out, in, kh, kw), here flattened to (out, in·kh·kw): rows (``_DoraConvNdLayer``
  takes the norm over every dim but the first; m is stored as (1, out, 1, 1)).

The second form of ΔW is used: it never subtracts W0 from a rescaled copy of itself, so a
small update is not lost to cancellation; (m − ‖V‖) / ‖V‖ is formed once per channel.
"""

from __future__ import annotations

import torch


def dora_delta(
    w0: torch.Tensor, lora_delta: torch.Tensor, magnitude: torch.Tensor, *, out_dim: int
) -> torch.Tensor:
    """ΔW of a DoRA module: (m / ‖V‖ − 1) ⊙ W0 + (m / ‖V‖) ⊙ s·B·A, V = W0 + s·B·A.

    Args:
        w0: (p, q) base weight in its stored layout, widened to the compute dtype.
        lora_delta: (p, q) s·B·A in the same layout and dtype (LoRA's ΔW).
        magnitude: (p,) when ``out_dim`` is 0, (q,) when it is 1: DoRA's m.
        out_dim: The axis of the output channels (0: rows, nn.Linear / conv; 1: columns,
            Conv1D with fan_in_fan_out and nn.Embedding). The norm is taken over the other.

    Returns:
        (p, q) dense ΔW in the dtype of the inputs.

    Raises:
        ValueError: Shapes do not agree, or ``out_dim`` is not 0 or 1.
    """
    if out_dim not in (0, 1):
        raise ValueError(f"out_dim must be 0 or 1, got {out_dim}")
    if w0.shape != lora_delta.shape or magnitude.shape != (w0.shape[out_dim],):
        raise ValueError(
            f"shapes do not agree: W0 {tuple(w0.shape)}, s·B·A {tuple(lora_delta.shape)}, "
            f"m {tuple(magnitude.shape)} (expected ({w0.shape[out_dim]},))"
        )
    norm = torch.linalg.vector_norm(w0 + lora_delta, dim=1 - out_dim)  # ‖V‖ per output: (p|q,)
    view = (-1, 1) if out_dim == 0 else (1, -1)  # broadcast over the output axis
    scale = (magnitude / norm).reshape(view)  # m / ‖V‖
    shift = ((magnitude - norm) / norm).reshape(view)  # m / ‖V‖ − 1
    return shift * w0 + scale * lora_delta
