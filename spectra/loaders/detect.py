"""Which kind of checkpoint a path holds, decided from the files alone (never from names given
on the command line).

Order of the checks:

1. a directory holding ``adapter_config.json``, or ``adapter_config.json`` /
   ``adapter_model.safetensors`` / ``adapter_model.bin`` given directly with the config beside
   it → a PEFT adapter; the config decides: ``peft_type`` LORA → ``"lora"``, with
   ``use_dora`` → ``"dora"``; other LoRA variants and base-changing initialisations (PiSSA,
   OLoRA, CorDA, LoftQ, LoRA-GA) are refused;
2. otherwise the tensors are opened (:func:`spectra.io.open_tensors`): metadata
   ``format == "spectra.multilora"`` → ``"multilora"``; ``*.multilora_A`` keys without it →
   refused (the metadata carries α, r, n); kohya / LyCORIS module parameters
   (``lora_down`` / ``lora_up``, ``hada_*``, ``lokr_*``) → ``"kohya"``, ``"loha"`` or
   ``"lokr"`` (:func:`spectra.loaders.kohya.kohya_kind`); PEFT or loralib LoRA factor keys
   (``lora_A`` / ``lora_B`` / ``lora_embedding_A`` / ``_B``, torchtune's ``lora_a`` /
   ``lora_b``) → ``"lora"``, a plain LoRA state
   dict (:mod:`spectra.loaders.plain_lora`: its reader finds α in the metadata or the options,
   or refuses); any 2-D tensor → ``"full"``; nothing recognisable → refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spectra.errors import AdapterConfigError, FileFormatError, UnsupportedFormatError
from spectra.io import open_tensors
from spectra.io.jsonfile import read_json
from spectra.io.source import TensorSource
from spectra.loaders.kohya_modules import kohya_kind
from spectra.multilora.format import SUFFIX_A, is_multilora_metadata
from spectra.update import Kind

ADAPTER_CONFIG_NAME = "adapter_config.json"
# In PEFT's own order of preference (safetensors first).
ADAPTER_WEIGHT_NAMES = ("adapter_model.safetensors", "adapter_model.bin")

LOOKED_FOR = (
    "spectra reads: a PEFT LoRA adapter (a directory with adapter_config.json and "
    "adapter_model.safetensors or adapter_model.bin); a LoRA state dict (.pt/.bin/.safetensors "
    "with lora_A/lora_B keys); a kohya or LyCORIS file (lora_down/lora_up, hada_*, lokr_*); a "
    "spectra MultiLoRA file (.safetensors or "
    ".pt with metadata format = 'spectra.multilora'); a full checkpoint (.safetensors, "
    ".pt/.pth/.bin/.ckpt, a sharded *.index.json directory or a Hugging Face model directory) "
    "holding 2-D weight matrices"
)

# init_lora_weights values that rewrite the base weight at init (W0 → W0 − s·B0A0, or a
# quantized residual): the true ΔW is s(BA − B0A0) (+ the quantization error), which the
# adapter files alone cannot give (formats.md).
_BASE_CHANGING_INITS = ("pissa", "olora", "corda", "loftq", "lora_ga")

# LoraConfig fields that turn on a LoRA variant whose ΔW is not s·BA (peft 0.21
# ``is_lora_variant`` fields other than use_dora, plus LoRA on raw parameters).
_VARIANT_FIELDS = (
    "use_qalora",
    "alora_invocation_tokens",
    "velora_config",
    "monteclora_config",
    "use_bdlora",
    "arrow_config",
    "kasa_config",
    "target_parameters",
)

# A LoRA factor key of PEFT, loralib or torchtune (kohya's lora_down/lora_up are told apart
# first).
_LORA_KEY = re.compile(
    r"(^|\.)(lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_a|lora_b)(\.|$)"
)


def detect_kind(path: str | Path) -> Kind:
    """The kind of checkpoint at ``path``, from its files (see the module docstring).

    Args:
        path: A checkpoint file or directory.

    Returns:
        ``"lora"``, ``"dora"``, ``"multilora"``, ``"kohya"``, ``"loha"``, ``"lokr"`` or
        ``"full"``.

    Raises:
        FileFormatError: The path is missing or holds nothing spectra recognises.
        UnsupportedFormatError: A recognised format spectra cannot turn into ΔW.
        AdapterConfigError: An adapter whose config is missing or invalid.
    """
    path = Path(path)
    if not path.exists():
        raise FileFormatError("no such file or directory; check the path", path=path)
    peft = find_peft_files(path)
    if peft is not None:
        config_path, _ = peft
        return peft_kind(read_adapter_config(config_path), config_path)
    try:
        source = open_tensors(path)
    except FileFormatError as e:
        raise FileFormatError(f"{e.detail}. {LOOKED_FOR}", path=e.path or path, key=e.key) from e
    return kind_from_tensors(source)


def find_peft_files(path: Path) -> tuple[Path, Path] | None:
    """``(adapter_config.json, adapter weights)`` when ``path`` is a PEFT adapter directory or
    one of its two files with the other beside it; None when there is no adapter config.

    Raises:
        FileFormatError: The config is there but neither weights file is beside it.
    """
    if path.is_dir():
        folder = path
    elif path.name == ADAPTER_CONFIG_NAME or path.name in ADAPTER_WEIGHT_NAMES:
        folder = path.parent
    else:
        return None
    config = folder / ADAPTER_CONFIG_NAME
    if not config.is_file():
        return None
    if path.is_file() and path.name in ADAPTER_WEIGHT_NAMES:
        return config, path
    for name in ADAPTER_WEIGHT_NAMES:
        if (folder / name).is_file():
            return config, folder / name
    raise FileFormatError(
        f"{ADAPTER_CONFIG_NAME} is here but neither {' nor '.join(ADAPTER_WEIGHT_NAMES)} is "
        "beside it; copy the adapter weights into this directory",
        path=folder,
    )


def read_adapter_config(path: Path) -> dict[str, Any]:
    """``adapter_config.json`` parsed into a dict.

    Raises:
        FileFormatError: Unreadable or not JSON.
        AdapterConfigError: JSON, but not an object.
    """
    # NaN allowed: Python writes it, and the fields that hold it are refused by name later
    raw = read_json(path, what="the adapter config", fix="save the adapter again", allow_nan=True)
    if not isinstance(raw, dict):
        raise AdapterConfigError(
            f"the adapter config must be a JSON object, got {type(raw).__name__}", path=path
        )
    return raw


def peft_kind(config: Mapping[str, Any], path: Path) -> Kind:
    """The kind of a PEFT adapter from its config (``"lora"``, or ``"dora"`` with ``use_dora``),
    refusing what spectra cannot read.

    Raises:
        AdapterConfigError: No ``peft_type``.
        UnsupportedFormatError: Not LoRA, a LoRA variant other than DoRA, or a base-changing
            init.
    """
    peft_type = config.get("peft_type")
    if peft_type is None:
        raise AdapterConfigError(
            "no 'peft_type' field: this is not a PEFT adapter config; save it with PEFT's "
            "save_pretrained",
            path=path,
            key="peft_type",
        )
    if peft_type != "LORA":
        raise UnsupportedFormatError(
            f"peft_type {peft_type!r} is not read: spectra reads LoRA adapters (peft_type 'LORA')",
            path=path,
            key="peft_type",
        )
    _refuse_base_changing_init(config.get("init_lora_weights"), path)
    for name in _VARIANT_FIELDS:
        if config.get(name):
            raise UnsupportedFormatError(
                f"{name} is set: this LoRA variant does not form ΔW as s·B·A, and spectra reads "
                "plain LoRA only",
                path=path,
                key=name,
            )
    return "dora" if config.get("use_dora") else "lora"


def _refuse_base_changing_init(init: object, path: Path) -> None:
    if not isinstance(init, str):
        return  # True / False: the base is untouched, ΔW = s·B·A
    if init.lower().startswith(_BASE_CHANGING_INITS):
        raise UnsupportedFormatError(
            f"init_lora_weights = {init!r} changes the base weight at initialisation "
            "(W0 becomes W0 − s·B0·A0, or a quantized residual), so the true update "
            "ΔW = s(BA − B0A0) needs the initial factors B0, A0 (or the residual base), which "
            "the adapter files do not hold; save the trained adapter with PEFT's "
            "save_pretrained(..., path_initial_model_for_weight_conversion=<the adapter saved "
            "at step 0>), which converts it to a plain LoRA of the original base, and read that",
            path=path,
            key="init_lora_weights",
        )


def kind_from_tensors(source: TensorSource) -> Kind:
    """The kind of a tensor container from its metadata and keys (no PEFT config around).

    Raises:
        AdapterConfigError: MultiLoRA tensors without the MultiLoRA metadata.
        FileFormatError: No 2-D tensor at all.
    """
    if is_multilora_metadata(source.metadata):
        return "multilora"
    keys = source.keys()
    multi = [k for k in keys if k.endswith(SUFFIX_A)]
    if multi:
        raise AdapterConfigError(
            f"{multi[0]!r} is a MultiLoRA factor but the file has no 'format' = "
            "'spectra.multilora' metadata, which carries r, n and alpha; write the file with "
            "spectra.multilora.format.write_multilora",
            path=source.path,
            key=multi[0],
        )
    kohya = kohya_kind(keys)
    if kohya is not None:
        return kohya
    if any(_LORA_KEY.search(k) for k in keys):
        return "lora"  # a plain LoRA state dict; its reader finds α or names the options
    if any(len(source.shape(k)) == 2 for k in keys):
        return "full"
    raise FileFormatError(
        f"no 2-D weight matrix among {len(keys)} tensors. {LOOKED_FOR}", path=source.path
    )
