"""One torch pickle (``.pt .pth .bin .ckpt``), loaded only with ``weights_only=True``.

Pickle can run arbitrary code while loading. spectra uses ``torch.load(weights_only=True)``,
which allows tensors and plain containers only, memory-maps zip-format files (``mmap=True``:
tensor data is paged in when read), and never falls back to ``weights_only=False``. A file the
restricted unpickler refuses raises :class:`~spectra.errors.UnsafeFileError`.

The loaded object is normalized to a flat ``{key: tensor}`` map:

1. a top-level ``"__metadata__"`` string map becomes :attr:`TorchFile.metadata`;
2. while the dict holds no tensor directly and has a ``state_dict`` / ``model`` / ``module``
   dict entry (first of those, in that order), descend into it (training checkpoints:
   Lightning, DeepSpeed, plain ``{"model": ..., "optimizer": ...}``); the other top-level
   entries are ignored and named in :attr:`TorchFile.description`;
3. nested dicts of tensors are flattened with ``.``; non-tensor values (ints, strings, lists)
   are not tensors and are dropped;
4. a leading ``module.`` (DDP) is stripped when every key has it.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from spectra.errors import FileFormatError, UnsafeFileError
from spectra.io._common import check_file, missing_key

_WRAPPERS = ("state_dict", "model", "module")
_DDP = "module."
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) format; older files are raw pickles


class TorchFile:
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
        self._keys = sorted(self._tensors)
        self.description = f"torch file {self.path} ({len(self._keys)} tensors{how})"

    def keys(self) -> list[str]:
        """Normalized tensor names, sorted."""
        return list(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._tensors

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
        if key not in self._tensors:
            raise missing_key(key, self.path, self._keys)
        return self._tensors[key]


def _load(path: Path) -> Any:
    """``torch.load`` with ``weights_only=True``; mmap for zip-format files only.

    The format is told from the magic bytes rather than from a failed mmap attempt: old
    (non-zip) files cannot be mmapped, and a truncated zip must be reported as corrupt, not
    retried as an old pickle.
    """
    with path.open("rb") as f:
        is_zip = f.read(4) == _ZIP_MAGIC
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower():
            raise _unsafe(path, e) from e
        raise _corrupt(path, e) from e
    except Exception as e:  # torch raises RuntimeError, KeyError, EOFError... for bad bytes
        raise _corrupt(path, e) from e


def _unsafe(path: Path, e: Exception) -> UnsafeFileError:
    # torch's message is advice to use weights_only=False around the one line that matters.
    lines = [ln for ln in str(e).splitlines() if "global" in ln.lower()]
    said = f" (torch said: {lines[0].strip()})" if lines else ""
    return UnsafeFileError(
        "this pickle holds objects other than tensors and plain containers, so loading it "
        "would need code execution; spectra will not run it. If you trust the file, convert "
        "it to safetensors in a trusted environment: "
        "`sd = torch.load(path, weights_only=False); "
        "safetensors.torch.save_file({k: v.contiguous() for k, v in sd.items()}, 'model.safetensors')`"
        f"{said}",
        path=path,
    )


def _corrupt(path: Path, e: Exception) -> FileFormatError:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return FileFormatError(
        f"cannot load as a torch file ({type(e).__name__}: {msg}); the file is truncated, "
        "corrupt or not a torch checkpoint; save or download it again",
        path=path,
    )


def _metadata(obj: Any, path: Path) -> dict[str, str]:
    meta = obj.get("__metadata__") if isinstance(obj, dict) else None
    if meta is None:
        return {}
    if not isinstance(meta, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
    ):
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
    while not any(isinstance(v, torch.Tensor) for v in obj.values()):
        wrapper = next((k for k in _WRAPPERS if isinstance(obj.get(k), dict)), None)
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


def _flatten(obj: dict, prefix: str, out: dict[str, torch.Tensor], path: Path) -> None:
    for k, v in obj.items():
        if not prefix and k == "__metadata__":
            continue
        key = f"{prefix}{k}"
        if isinstance(v, torch.Tensor):
            if key in out:
                raise FileFormatError(
                    "two entries flatten to the same key (a nested dict and a dotted key); "
                    "save a flat state dict",
                    path=path,
                    key=key,
                )
            out[key] = v
        elif isinstance(v, dict):
            _flatten(v, f"{key}.", out, path)
