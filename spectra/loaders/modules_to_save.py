"""Whole modules saved beside an adapter (PEFT ``modules_to_save``): ΔW = W_saved − W_base.

PEFT trains a full copy of each module named in ``modules_to_save`` (a task head, an
embedding) and ``save_pretrained`` writes its weights under the module's own key,
``base_model.model.<module>.weight`` (peft 0.21 ``get_peft_model_state_dict`` strips
``modules_to_save.<adapter>.``); a raw ``PeftModel.state_dict()`` keeps
``<module>.modules_to_save.<adapter>.weight``. Either way the update is dense and needs the
base weight: ``merge_and_unload()`` puts the saved copy in place of the original, so
ΔW = W_saved − W_base, each widened before the subtraction (as for a full fine-tune).
"""

from __future__ import annotations

import torch

from spectra.errors import CheckpointMismatchError
from spectra.io.source import TensorSource
from spectra.io.stream import TensorStream, stream_difference


def weight_difference(
    tuned: TensorSource, tuned_key: str, base: TensorSource, base_key: str, dtype: torch.dtype
) -> torch.Tensor:
    """W_tuned − W_base of one weight, each operand widened to ``dtype`` before subtracting.

    Read through :class:`~spectra.io.stream.TensorStream` (one stored tensor at a time,
    no memory map left resident), as :class:`~spectra.loaders.full.FullReader` does.

    Args:
        tuned: The checkpoint holding the new weight.
        tuned_key: Its key there.
        base: The base checkpoint.
        base_key: The weight's key in the base.
        dtype: float32 or float64.

    Returns:
        (out, in·kh·kw) ΔW in ``dtype`` (a conv kernel flattened).

    Raises:
        CheckpointMismatchError: The two stored shapes differ.
    """
    shape, base_shape = tuned.shape(tuned_key), base.shape(base_key)
    if shape != base_shape:
        raise CheckpointMismatchError(
            f"shape {shape} here but {base_shape} in the base ({base.path}, key {base_key!r}); "
            "pass the base model this checkpoint was trained from",
            path=tuned.path,
            key=tuned_key,
        )
    return stream_difference(TensorStream(tuned), tuned_key, TensorStream(base), base_key, dtype)
