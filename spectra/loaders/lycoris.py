"""LyCORIS LoHa and LoKr: ΔW from their factors, and the scale rule, as LyCORIS defines them.

Source: KohakuBlueleaf/LyCORIS, ``lycoris/modules/loha.py`` and ``lycoris/modules/lokr.py``
(``LohaModule`` / ``LokrModule``: ``__init__`` for the scale, ``get_weight`` for ΔW,
``make_module_from_state_dict`` for what r is when a file is loaded), and
``lycoris/functional/loha.py`` (``HadaWeight.forward``).

**LoHa** (Hadamard product of two low-rank products), keys ``hada_w1_a`` (out, r),
``hada_w1_b`` (r, in·kh·kw), ``hada_w2_a`` (out, r), ``hada_w2_b`` (r, in·kh·kw), ``alpha``::

    ΔW = (w1_a w1_b) ⊙ (w2_a w2_b) · alpha / r,    r = hada_w1_b.shape[0]

rank(ΔW) ≤ r1·r2 (= r²): the Hadamard product of a rank-r1 and a rank-r2 matrix has rank at
most r1·r2, so ΔW is not low-rank in the LoRA sense.

**LoKr** (Kronecker product), keys ``lokr_w1`` (a, c) or ``lokr_w1_a`` (a, r) ``lokr_w1_b``
(r, c); ``lokr_w2`` (b, d[, kh, kw]) or ``lokr_w2_a`` (b, r) ``lokr_w2_b`` (r, d·kh·kw);
``alpha``::

    ΔW = kron(w1, w2) · alpha / r     (out = a·b, in·kh·kw = c·d·kh·kw)

with r the inner size of whichever of w1, w2 is decomposed (``lokr_w1_a.shape[1]``, else
``lokr_w2_a.shape[1]``), and **scale 1 when both are stored whole** (LyCORIS sets alpha = r
then). rank(ΔW) = rank(w1)·rank(w2). For a conv kernel, kron(w1, w2) with w2 (b, d, kh, kw)
read as (b, d·kh·kw) gives exactly the (a·b, c·d·kh·kw) flattening of LyCORIS's 4-D kron.

Both are materialized as dense (out, in·kh·kw) matrices: their spectra are computed like a
full fine-tune's. In both, a missing or zero alpha means alpha = r (scale 1). LyCORIS's
``rs_lora`` (α/√r) is a training option not stored in the file and is not applied. Not read:
Tucker / CP factors (``hada_t1``, ``hada_t2``, ``lokr_t2``) and weight decomposition
(``dora_scale``); they are refused by the reader.
"""

from __future__ import annotations

import torch

from spectra.loaders.lora_scaling import alpha_or_rank, lora_scaling, scaling_rule_text

LOHA_KEYS = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
LOKR_KEYS = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b")


def loha_delta(
    w1_a: torch.Tensor, w1_b: torch.Tensor, w2_a: torch.Tensor, w2_b: torch.Tensor, scale: float
) -> torch.Tensor:
    """LoHa's ΔW = (w1_a w1_b) ⊙ (w2_a w2_b) · scale.

    Args:
        w1_a: (out, r1). w1_b: (r1, in·kh·kw). w2_a: (out, r2). w2_b: (r2, in·kh·kw); all
            widened to the compute dtype.
        scale: alpha / r (:func:`lycoris_scale`).

    Returns:
        (out, in·kh·kw) dense ΔW.
    """
    return (w1_a @ w1_b) * (w2_a @ w2_b) * scale


def lokr_delta(w1: torch.Tensor, w2: torch.Tensor, scale: float) -> torch.Tensor:
    """LoKr's ΔW = kron(w1, w2) · scale.

    Args:
        w1: (a, c), whole or w1_a @ w1_b.
        w2: (b, d·kh·kw) (a stored (b, d, kh, kw) kernel flattened), whole or w2_a @ w2_b.
        scale: :func:`lycoris_scale`.

    Returns:
        (a·b, c·d·kh·kw) dense ΔW.
    """
    return torch.kron(w1, w2.reshape(w2.shape[0], -1)) * scale


def lycoris_scale(alpha: float | None, r: int | None) -> tuple[float, str]:
    """(scale, the rule with its numbers) of a LoHa / LoKr module.

    Args:
        alpha: The stored ``alpha``, or None when absent.
        r: The module's inner rank; None for a LoKr module whose w1 and w2 are both whole
            (LyCORIS: scale 1).
    """
    if r is None:
        return 1.0, "1 (LoKr with w1 and w2 stored whole)"
    a = alpha_or_rank(alpha, r)
    missing = " (alpha missing or 0: alpha = r)" if alpha is None or alpha == 0 else ""
    return lora_scaling(a, r, use_rslora=False), scaling_rule_text(a, r, use_rslora=False) + missing
