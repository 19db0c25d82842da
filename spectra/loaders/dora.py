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

Other conventions (:class:`MagnitudeAxis`), decided by the file format, never by whether a
shape fits (on a square layer both axes fit and the wrong one is silently wrong):

* ``OUTPUT``: one magnitude per output channel, the norm over everything else: the paper,
  PEFT ``lora_magnitude_vector`` (out,), torchtune's ``magnitude`` (out,), and LyCORIS /
  OneTrainer ``dora_scale`` stored as (out, 1[, 1, 1]) (LyCORIS ``wd_on_out``);
* ``INPUT``: one magnitude per **input** channel, the norm over the output channels and the
  kernel: LyCORIS / OneTrainer ``dora_scale`` stored as (1, in[, 1, 1]) (their default). For a
  conv kernel flattened to (out, in·kh·kw), input channel i owns columns i·kh·kw … (i+1)·kh·kw − 1.

LyCORIS and ComfyUI add the float eps of their compute dtype to ‖V‖ (against a division by
zero); spectra computes the formula without it, a relative difference of eps / ‖V‖ per channel.

The second form of ΔW is used: it never subtracts W0 from a rescaled copy of itself, so a
small update is not lost to cancellation; (m − ‖V‖) / ‖V‖ is formed once per channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

import torch


class MagnitudeAxis(Enum):
    """Which channels DoRA's magnitude m indexes, in the (out, in·kh·kw) layout."""

    OUTPUT = "output"  # m: (out,); ‖V‖ per row
    INPUT = "input"  # m: (in,); ‖V‖ per input channel, over all rows and its kernel columns


def weight_decomposed_delta(
    w0: torch.Tensor,
    delta: torch.Tensor,
    magnitude: torch.Tensor,
    *,
    axis: MagnitudeAxis,
    kernel: int = 1,
) -> torch.Tensor:
    """ΔW of a weight-decomposed module: (m / ‖V‖ − 1) ⊙ W0 + (m / ‖V‖) ⊙ ΔW_inner,
    V = W0 + ΔW_inner, with ‖V‖ and m per channel of ``axis``.

    Args:
        w0: (out, in·kernel) base weight, widened to the compute dtype.
        delta: (out, in·kernel) the inner update (s·B·A for LoRA, or a LoHa / LoKr / full ΔW).
        magnitude: (out,) for ``OUTPUT``, (in,) for ``INPUT``.
        axis: The channels m indexes (see the module docstring).
        kernel: kh·kw (columns per input channel) for ``INPUT``; 1 for linear layers.

    Returns:
        (out, in·kernel) dense ΔW in the dtype of the inputs.

    Raises:
        ValueError: Shapes do not agree.
    """
    p, q = w0.shape
    channels = p if axis is MagnitudeAxis.OUTPUT else q // max(kernel, 1)
    if delta.shape != w0.shape or kernel < 1 or q % kernel or magnitude.shape != (channels,):
        raise ValueError(
            f"shapes do not agree: W0 {tuple(w0.shape)}, ΔW {tuple(delta.shape)}, "
            f"m {tuple(magnitude.shape)} (expected ({channels},), {axis.value} axis, "
            f"kernel {kernel})"
        )
    if axis is MagnitudeAxis.OUTPUT:
        view: tuple[int, ...] = (p, 1)
        norm = torch.linalg.vector_norm(w0 + delta, dim=1)  # ‖V‖ per row: (out,)
        w, d = w0, delta
    else:
        view = (1, channels, 1)
        w, d = w0.reshape(p, channels, kernel), delta.reshape(p, channels, kernel)
        norm = torch.linalg.vector_norm(w + d, dim=(0, 2))  # ‖V‖ per input channel: (in,)
    scale = (magnitude / norm).reshape(view)  # m / ‖V‖
    shift = ((magnitude - norm) / norm).reshape(view)  # m / ‖V‖ − 1
    return (shift * w + scale * d).reshape(p, q)


def dora_delta(
    w0: torch.Tensor, lora_delta: torch.Tensor, magnitude: torch.Tensor, *, out_dim: int
) -> torch.Tensor:
    """ΔW of a PEFT DoRA module: (m / ‖V‖ − 1) ⊙ W0 + (m / ‖V‖) ⊙ s·B·A, V = W0 + s·B·A.

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
    # the stored layout's rows are outputs (OUTPUT), or its columns are (the INPUT rule of
    # the stored matrix, one column per channel)
    axis = MagnitudeAxis.OUTPUT if out_dim == 0 else MagnitudeAxis.INPUT
    return weight_decomposed_delta(w0, lora_delta, magnitude, axis=axis)


def dora_scale_axis(shape: Sequence[int], out: int) -> MagnitudeAxis | None:
    """The axis of a LyCORIS / OneTrainer ``dora_scale`` from where its stored layout keeps
    the channels: (out, 1[, 1, 1]) → ``OUTPUT``, (1, in[, 1, 1]) → ``INPUT``; None for any
    other layout. Decided by the layout (which dimension holds the channels), never by a
    channel count fitting: a square layer's (n, 1) and (1, n) read differently. (1, 1) on a
    layer with one output is ``OUTPUT``, which equals ``INPUT`` when it also has one input.

    Args:
        shape: The stored shape of ``dora_scale``.
        out: The module's output channels (rows of ΔW).
    """
    if len(shape) < 2 or any(d != 1 for d in shape[2:]):
        return None
    if shape[1] == 1 and shape[0] == out:
        return MagnitudeAxis.OUTPUT
    if shape[0] == 1:
        return MagnitudeAxis.INPUT
    return None
