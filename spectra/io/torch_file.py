"""One torch pickle (``.pt .pth .bin .ckpt``), loaded only with ``weights_only=True``.

Pickle can run arbitrary code while loading. spectra uses ``torch.load(weights_only=True)``,
which allows tensors and plain containers only, memory-maps zip-format files (``mmap=True``:
tensor data is paged in when read), and never falls back to ``weights_only=False`` (an
explicit ``weights_only=True`` also wins over ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``). A file the
restricted unpickler refuses raises :class:`~spectra.errors.UnsafeFileError`; bytes that are not
a pickle at all raise :class:`~spectra.errors.FileFormatError`.

The loaded object is normalized to a flat ``{key: tensor}`` map:

1. a top-level ``"__metadata__"`` string map becomes :attr:`TorchFile.metadata`;
2. while the dict holds no weight tensor directly (only dicts, non-tensor values and 0-d
   tensors such as a saved ``loss``) and has a dict entry named in :data:`CONTAINERS` that
   holds tensors (the first such, in that order), descend into it: training checkpoints wrap the model's
   state dict (Lightning ``state_dict``, the PyTorch tutorial's ``model_state_dict``,
   DeepSpeed ``module``, fairseq / timm ``model``; an EMA copy only when no other is there).
   The container's name is thus not part of any key, and the other entries at that level
   (optimizer, epoch, loss, …) are ignored and named in :attr:`TorchFile.description`;
3. nested dicts of tensors are flattened with ``.`` (without recursion: a crafted file may nest
   thousands deep); non-tensor values (ints, strings, lists) are dropped; sparse, quantized and
   nested tensors are refused by key (spectra reads dense tensors);
4. a leading ``module.`` (DDP) is stripped when every key has it.
"""

from __future__ import annotations

import pickle
import pickletools
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from spectra.errors import FileFormatError, UnsafeFileError
from spectra.io._common import SortedKeys, check_file, is_str_map

# Dict entries a training checkpoint keeps the model's state dict in, most specific first; the
# trained weights before an exponential moving average of them (read only when it is alone).
CONTAINERS = (
    "state_dict",
    "model_state_dict",
    "model",
    "module",
    "state_dict_ema",
    "model_ema",
    "ema",
)
_DDP = "module."
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) format; older files are raw pickles
# What torch's weights-only unpickler says when it refuses an object (torch 2.x messages) ...
_REFUSED_OBJECTS = ("global", "reduce for", "new object", "can only build")
# ... or when it meets a real pickle opcode it does not support (INST, protocol 4 FRAME, ...);
# a byte that is no opcode at all means the bytes are not a pickle: a corrupt file
_PICKLE_OPCODES = frozenset(op.code.encode("latin-1")[0] for op in pickletools.opcodes)
_UNPICKLER_SAYS = "WeightsUnpickler error:"


class TorchFile(SortedKeys):
    """A :class:`~spectra.io.source.TensorSource` over one torch pickle file.

    Attributes:
        path: The file.
        metadata: The file's top-level ``"__metadata__"`` string map ({} when absent).
        description: One line saying what was opened and how it was normalized.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        check_file(self.path)
        obj = _load(self.path)
        self.metadata = _metadata(obj, self.path)
        self._tensors, how = _normalize(obj, self.path)
        self._set_keys(self._tensors)
        self.description = f"torch file {self.path} ({len(self._keys)} tensors{how})"

    def shape(self, key: str) -> tuple[int, ...]:
        """Shape of the (memory-mapped) tensor; no data is read."""
        return tuple(self._tensor(key).shape)

    def dtype(self, key: str) -> torch.dtype:
        """Stored dtype; no data is read."""
        return self._tensor(key).dtype

    def get(self, key: str) -> torch.Tensor:
        """One tensor in its stored dtype, on CPU (detached from any autograd graph)."""
        return self._tensor(key).detach()

    def _tensor(self, key: str) -> torch.Tensor:
        self._require(key)
        return self._tensors[key]


def _load(path: Path) -> Any:
    """``torch.load`` with ``weights_only=True``; mmap for zip-format files only.

    The format is told from the magic bytes rather than from a failed mmap attempt: old
    (non-zip) files cannot be mmapped, and a truncated zip must be reported as corrupt, not
    retried as an old pickle. torch's warnings about the file (an unusual pickle protocol) are
    not shown: the outcome is either the tensors or one of spectra's errors.
    """
    try:
        with path.open("rb") as f:
            is_zip = f.read(4) == _ZIP_MAGIC
    except OSError as e:
        raise FileFormatError(
            f"cannot read the file ({e.strerror or e}); check that it exists and is readable",
            path=path,
        ) from e
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as e:
        if _needs_code_execution(e):
            raise _unsafe(path, e) from e
        raise _corrupt(path, e) from e
    except Exception as e:  # RuntimeError, OSError, KeyError, EOFError... for bad bytes
        raise _corrupt(path, e) from e


def _needs_code_execution(e: pickle.UnpicklingError) -> bool:
    """True when torch's restricted unpickler refused something only the unrestricted one
    reads (a global, a call, an instance, or a pickle opcode it does not support: only running
    the file's pickle could load it); False for bytes that are not pickle opcodes at all."""
    msg = str(e).lower()
    if any(word in msg for word in _REFUSED_OBJECTS):
        return True
    operand = re.search(r"unsupported operand (\d+)", msg)
    return operand is not None and int(operand.group(1)) in _PICKLE_OPCODES


def _unsafe(path: Path, e: Exception) -> UnsafeFileError:
    # torch's message is paragraphs of advice around the one line that matters
    _, found, reason = str(e).partition(_UNPICKLER_SAYS)
    lines = [ln.strip() for ln in (reason if found else str(e)).splitlines()]
    lines = [ln for ln in lines if ln and (found or "global" in ln.lower())]
    said = f" (torch said: {lines[0]})" if lines else ""
    return UnsafeFileError(
        "torch's safe loader (weights_only=True) refuses this pickle: it holds objects other "
        "than tensors and plain containers, or pickle features only the unrestricted loader "
        "reads, so loading it would need code execution; spectra will not run it. If you trust "
        "the file, convert it to safetensors in a trusted environment: "
        "`sd = torch.load(path, weights_only=False); "
        "safetensors.torch.save_file({k: v.contiguous() for k, v in sd.items()}, 'model.safetensors')`"
        f"{said}",
        path=path,
    )


def _corrupt(path: Path, e: Exception) -> FileFormatError:
    # torch wraps the unpickler's one-line reason in paragraphs of advice: keep the reason
    text = str(e).split(_UNPICKLER_SAYS, 1)[-1].strip()
    msg = text.splitlines()[0] if text else type(e).__name__
    return FileFormatError(
        f"cannot load as a torch file ({type(e).__name__}: {msg}); the file is truncated, "
        "corrupt or not a torch checkpoint; save or download it again",
        path=path,
    )


def _metadata(obj: Any, path: Path) -> dict[str, str]:
    meta = obj.get("__metadata__") if isinstance(obj, dict) else None
    if meta is None:
        return {}
    if not is_str_map(meta):
        raise FileFormatError(
            "the '__metadata__' entry must be a dict of strings to strings; rewrite it so",
            path=path,
            key="__metadata__",
        )
    return dict(meta)


def _normalize(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """Flat ``{key: tensor}`` plus a note of what was unwrapped/stripped/ignored."""
    if not isinstance(obj, dict):
        raise FileFormatError(
            f"the file holds a {type(obj).__name__}, not a dict of tensors (a state dict); "
            "save `model.state_dict()` instead",
            path=path,
        )
    notes: list[str] = []
    trail: list[str] = []
    while not any(isinstance(v, torch.Tensor) and v.ndim > 0 for v in obj.values()):
        wrapper = next((k for k in CONTAINERS if _holds_tensor(obj.get(k))), None)
        if wrapper is None:
            break
        ignored = sorted(str(k) for k in obj if k not in (wrapper, "__metadata__"))
        if ignored:
            notes.append(f"ignored {'.'.join(trail) or 'top-level'} entries {ignored}")
        trail.append(wrapper)
        obj = obj[wrapper]
    if trail:
        notes.insert(0, f"read from {'.'.join(repr(t) for t in trail)}")
    flat: dict[str, torch.Tensor] = {}
    _flatten(obj, "", flat, path)
    if flat and all(k.startswith(_DDP) for k in flat):
        flat = {k[len(_DDP) :]: v for k, v in flat.items()}
        notes.append("stripped the 'module.' (DDP) prefix")
    return flat, "".join(f"; {n}" for n in notes)


def _holds_tensor(obj: Any) -> bool:
    """True when ``obj`` is a dict with a tensor somewhere in its nested dicts (iterative)."""
    stack = [obj] if isinstance(obj, dict) else []
    while stack:
        node = stack.pop()
        for v in node.values():
            if isinstance(v, torch.Tensor):
                return True
            if isinstance(v, dict):
                stack.append(v)
    return False


def _flatten(obj: dict, prefix: str, out: dict[str, torch.Tensor], path: Path) -> None:
    """Nested dicts of tensors into ``out`` under dotted keys; non-tensor values are dropped.

    Iterative (an explicit stack, not recursion): a crafted file may nest dicts thousands deep.
    """
    stack: list[tuple[dict, str]] = [(obj, prefix)]
    while stack:
        node, pre = stack.pop()
        for k, v in node.items():
            if not pre and k == "__metadata__":
                continue
            key = f"{pre}{k}"
            if isinstance(v, torch.Tensor):
                _add_tensor(out, key, v, path)
            elif isinstance(v, dict):
                stack.append((v, f"{key}."))


def _add_tensor(out: dict[str, torch.Tensor], key: str, tensor: torch.Tensor, path: Path) -> None:
    if key in out:
        raise FileFormatError(
            "two entries flatten to the same key (a nested dict and a dotted key); "
            "save a flat state dict",
            path=path,
            key=key,
        )
    if tensor.layout != torch.strided or tensor.is_quantized or tensor.is_nested:
        kind = "quantized" if tensor.is_quantized else str(tensor.layout).removeprefix("torch.")
        raise FileFormatError(
            f"stored as a {'nested' if tensor.is_nested else kind} tensor; spectra reads dense "
            "tensors: save it dense (`t.to_dense()` / `t.dequantize()`) and pass that file",
            path=path,
            key=key,
        )
    out[key] = tensor
