"""Where the engine computes: CPU by default, CUDA only when asked for and present."""

from __future__ import annotations

import torch

from spectra.errors import OptionError


def resolve_device(device: str | torch.device = "cpu") -> torch.device:
    """Turn a user's device choice into a ``torch.device``, refusing one that is not there.

    Args:
        device: ``"cpu"`` (default), ``"cuda"`` or ``"cuda:N"``, or a ``torch.device``.

    Returns:
        The device to compute on.

    Raises:
        OptionError: The string is not a device name, the device type is neither CPU nor
            CUDA, CUDA was asked for but this torch has no usable CUDA, or the index is out of
            range.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise OptionError(f"unknown device {device!r}: pass 'cpu' or 'cuda[:N]'") from exc
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise OptionError(f"device {dev} is not supported: pass 'cpu' or 'cuda[:N]'")
    if not torch.cuda.is_available():
        raise OptionError(
            f"device {device!r} asked for, but this torch build/machine has no usable CUDA "
            f"(torch {torch.__version__}); pass --device cpu"
        )
    count = torch.cuda.device_count()
    if dev.index is not None and dev.index >= count:
        raise OptionError(f"device {dev} asked for, but only {count} CUDA device(s) exist")
    return dev
