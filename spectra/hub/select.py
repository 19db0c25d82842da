"""Which files of a repo an analysis needs, decided from the file list alone (no download).

In a folder of the repo (its root, or the path of the id), in this order:

1. ``adapter_config.json`` → a PEFT adapter: the config and ``adapter_model.safetensors``
   (``adapter_model.bin`` only when there is no safetensors file);
2. ``model.safetensors`` → that file (a single-file model);
3. ``model.safetensors.index.json`` → a sharded model: the index, then only the shards that
   hold the tensors needed (:func:`shards_for`);
4. ``pytorch_model.bin`` / ``pytorch_model.bin.index.json`` → the same, only when no
   safetensors weights are there;
5. exactly one other weights file (``*.safetensors``, ``*.pt``, ...) → that file (a MultiLoRA,
   kohya or plain LoRA file); several → refused, naming them (pass one in the id's path).

An id whose path names a file takes that file (plus ``adapter_config.json`` beside an
``adapter_model.*`` file, and the shards of an ``*.index.json``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from spectra.hub.errors import HubNotFoundError
from spectra.hub.ids import HubId

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
SINGLE_MODELS = ("model.safetensors", "pytorch_model.bin")
INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
INDEX_SUFFIX = ".index.json"
_MAX_LISTED = 6

Layout = Literal["adapter", "file", "sharded"]


@dataclass(frozen=True)
class Selection:
    """What to fetch, as repo paths (``/``-separated from the root).

    Attributes:
        layout: ``"adapter"`` (config + weights), ``"file"`` (one weights file) or
            ``"sharded"`` (an index; the shards are chosen after reading it).
        files: Fetched first: the adapter's two files, the weights file, or the index.
        folder: The repo folder the checkpoint lives in (``""`` for the root).
        target: The repo path the loaders are given: the folder, or the file named by the id.
        extras: Small files fetched alongside when present (``config.json``).
    """

    layout: Layout
    files: tuple[str, ...]
    folder: str
    target: str
    extras: tuple[str, ...] = ()


def select(hub_id: HubId, files: Collection[str]) -> Selection:
    """The files to fetch for ``hub_id`` from the repo's file list (module docstring).

    Raises:
        HubNotFoundError: The id's path is not in the repo, or no weights spectra reads are
            there (the message lists what is, and adapter folders elsewhere in the repo).
    """
    path = hub_id.path or ""
    if path and path in files:
        return _select_file(path, files)
    prefix = f"{path}/" if path else ""
    if path and not any(f.startswith(prefix) for f in files):
        raise HubNotFoundError(
            f"no file or folder {path!r} in the repo{_listing('; it holds', _top(files))}",
            path=str(hub_id),
        )
    here = {f[len(prefix) :] for f in files if f.startswith(prefix) and "/" not in f[len(prefix) :]}
    config = ("config.json",) if "config.json" in here else ()
    if ADAPTER_CONFIG in here:
        weights = next((w for w in ADAPTER_WEIGHTS if w in here), None)
        if weights is None:
            raise HubNotFoundError(
                f"{ADAPTER_CONFIG} is there but neither {' nor '.join(ADAPTER_WEIGHTS)}; the "
                "adapter upload is incomplete",
                path=str(hub_id),
            )
        return Selection("adapter", (prefix + ADAPTER_CONFIG, prefix + weights), path, path)
    for single, index in zip(SINGLE_MODELS, INDEXES, strict=True):
        if single in here:
            return Selection("file", (prefix + single,), path, path, _join(prefix, config))
        if index in here:
            return Selection("sharded", (prefix + index,), path, path, _join(prefix, config))
    weights = sorted(f for f in here if f.lower().endswith(WEIGHT_SUFFIXES))
    if len(weights) == 1:
        return Selection("file", (prefix + weights[0],), path, prefix + weights[0])
    raise HubNotFoundError(_no_weights_message(hub_id, here, files, weights), path=str(hub_id))


def shards_for(
    weight_map: Mapping[str, str], needed: Iterable[str] | None
) -> tuple[list[str], list[str]]:
    """The shards of an index that hold the needed tensors.

    Args:
        weight_map: The index's tensor name → shard file name.
        needed: Tensor names the analysis reads; None: every tensor.

    Returns:
        (shards to fetch, sorted; needed names the index does not hold, sorted).
    """
    if needed is None:
        return sorted(set(weight_map.values())), []
    needed = set(needed)
    shards = sorted({weight_map[k] for k in needed if k in weight_map})
    return shards, sorted(k for k in needed if k not in weight_map)


def _select_file(path: str, files: Collection[str]) -> Selection:
    folder, _, name = path.rpartition("/")
    prefix = f"{folder}/" if folder else ""
    if name.endswith(INDEX_SUFFIX):
        return Selection("sharded", (path,), folder, path)
    if name in ADAPTER_WEIGHTS and prefix + ADAPTER_CONFIG in files:
        return Selection("adapter", (prefix + ADAPTER_CONFIG, path), folder, path)
    if name == ADAPTER_CONFIG:
        weights = next((prefix + w for w in ADAPTER_WEIGHTS if prefix + w in files), None)
        if weights is not None:
            return Selection("adapter", (path, weights), folder, path)
    return Selection("file", (path,), folder, path)


def _join(prefix: str, names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(prefix + n for n in names)


def _top(files: Collection[str]) -> list[str]:
    return sorted({f.split("/")[0] + ("/" if "/" in f else "") for f in files})


def _listing(lead: str, items: list[str]) -> str:
    if not items:
        return "; it holds no files"
    shown = ", ".join(items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return f"{lead} {shown}" + (f" and {more} more" if more > 0 else "")


def _no_weights_message(
    hub_id: HubId, here: set[str], files: Collection[str], weights: list[str]
) -> str:
    if weights:
        return (
            f"{len(weights)} weights files and no model index or adapter config: name one, "
            f"e.g. {HubId(hub_id.repo_id, hub_id.revision, _in(hub_id, weights[0]))}"
            f"{_listing(' (files:', weights)})"
        )
    adapters = sorted(
        f.removesuffix("/" + ADAPTER_CONFIG) for f in files if f.endswith("/" + ADAPTER_CONFIG)
    )
    hint = (
        f"; adapters are in subfolders: name one, e.g. {HubId(hub_id.repo_id, hub_id.revision, adapters[0])}"
        if adapters
        else ""
    )
    return (
        "holds no weights spectra reads (adapter_config.json + adapter_model.*, "
        f"model.safetensors[.index.json], or a .safetensors/.bin/.pt file){hint}"
        f"{_listing('; files here:', sorted(here))}"
    )


def _in(hub_id: HubId, name: str) -> str:
    return f"{hub_id.path}/{name}" if hub_id.path else name
