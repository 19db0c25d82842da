"""Where and in what the engine computes: the compute dtypes, and the device (CPU by default,
CUDA only when asked for and present, or ``"auto"``: CUDA when present, else CPU).

The one place both are named: the analysis options, the loaders and the recipe import them.
"""

from __future__ import annotations

import torch

from spectra.errors import OptionError

# Compute dtypes a user may choose, by name: every stored operand is widened to one of these.
COMPUTE_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}


def compute_dtype_named(name: str) -> torch.dtype:
    """The compute dtype called ``name`` (a key of :data:`COMPUTE_DTYPES`).

    Raises:
        OptionError: ``name`` is not one of them.
    """
    if name not in COMPUTE_DTYPES:
        raise OptionError(f"--dtype must be {' or '.join(COMPUTE_DTYPES)}, got {name!r}")
    return COMPUTE_DTYPES[name]


def check_compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """``dtype`` itself when it is a compute dtype (a value of :data:`COMPUTE_DTYPES`).

    Raises:
        OptionError: Any other dtype.
    """
    if dtype not in COMPUTE_DTYPES.values():
        raise OptionError(f"dtype must be {' or '.join(COMPUTE_DTYPES)}, got {dtype}")
    return dtype


def resolve_device(device: str | torch.device = "cpu") -> torch.device:
    """Turn a user's device choice into a ``torch.device``, refusing one that is not there.

    Args:
        device: ``"cpu"`` (default), ``"cuda"`` or ``"cuda:N"``, a ``torch.device``, or
            ``"auto"``: ``cuda`` when this torch sees a usable CUDA device, else ``cpu``.

    Returns:
        The device to compute on.

    Raises:
        OptionError: The string is not a device name, the device type is neither CPU nor
            CUDA, CUDA was asked for but this torch has no usable CUDA, or the index is out of
            range.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise OptionError(f"unknown device {device!r}: pass 'cpu', 'cuda[:N]' or 'auto'") from exc
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise OptionError(f"device {dev} is not supported: pass 'cpu', 'cuda[:N]' or 'auto'")
    if not torch.cuda.is_available():
        raise OptionError(
            f"device {device!r} asked for, but this torch build/machine has no usable CUDA "
            f"(torch {torch.__version__}); pass --device cpu"
        )
    count = torch.cuda.device_count()
    if dev.index is not None and dev.index >= count:
        raise OptionError(f"device {dev} asked for, but only {count} CUDA device(s) exist")
    return dev
