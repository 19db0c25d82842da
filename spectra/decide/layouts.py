"""Which kind of layer owns each weight matrix: decides how an extracted LoRA is written.

A 2-D weight is an ``nn.Linear`` (out, in), an ``nn.Embedding`` (num_embeddings, dim) or a
GPT-2 ``Conv1D`` (in, out), and PEFT stores a different pair of factors for each. The tensor
files do not say which, so (**choice**, refuse to guess):

* BASE is a Hugging Face model directory (``config.json``) and ``transformers`` is installed:
  the model class named in ``config.json`` is built on the ``meta`` device (no weights, no
  network, no remote code) and each module's type is read from it;
* otherwise every 2-D weight is taken as ``nn.Linear`` only when the user says so
  (``--assume-linear``); without it the command stops and says what to pass.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from spectra.errors import AmbiguousInputError
from spectra.loaders.align import align_modules

Layout = Literal["linear", "embedding", "conv1d", "other"]


def module_layouts(
    base: Path, modules: list[str], *, assume_linear: bool
) -> tuple[dict[str, Layout], str]:
    """The layer kind of every module, and a one-line note saying where it came from.

    Args:
        base: The base checkpoint (file or directory).
        modules: Module paths as the checkpoint reader names them (weight key minus ``.weight``).
        assume_linear: Take every module as ``nn.Linear`` when the architecture is unknown.

    Raises:
        AmbiguousInputError: The architecture cannot be read and ``assume_linear`` is False.
    """
    types = _architecture_types(base)
    if types is not None:
        mapping = align_modules(modules, list(types), path=base).mapping
        layouts: dict[str, Layout] = {
            m: types[mapping[m]] if m in mapping else "other" for m in modules
        }
        return layouts, f"layer types read from {base / 'config.json'}"
    if assume_linear:
        return dict.fromkeys(
            modules, "linear"
        ), "every 2-D weight taken as nn.Linear (--assume-linear)"
    raise AmbiguousInputError(
        "the tensor files do not say which weights belong to nn.Linear and which to "
        "nn.Embedding, and PEFT writes the two differently; pass BASE as a Hugging Face model "
        "directory (with config.json, transformers installed), or --assume-linear if every "
        "changed matrix is an nn.Linear",
        path=base,
    )


def _architecture_types(base: Path) -> dict[str, Layout] | None:
    """Module path → layout from the model class of ``base/config.json``; None when unknown."""
    config_path = base / "config.json" if base.is_dir() else base.parent / "config.json"
    if not config_path.is_file() or importlib.util.find_spec("transformers") is None:
        return None
    import transformers  # optional: only here, where a model directory is given

    try:
        archs = json.loads(config_path.read_text(encoding="utf-8")).get("architectures") or []
        config = transformers.AutoConfig.from_pretrained(str(config_path.parent))
        cls = getattr(transformers, archs[0], None) if archs else None
        with torch.device("meta"):
            model = cls(config) if cls is not None else transformers.AutoModel.from_config(config)
    except (ValueError, KeyError, OSError, TypeError, json.JSONDecodeError):
        return None
    conv1d = getattr(transformers.pytorch_utils, "Conv1D", ())
    out: dict[str, Layout] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            out[name] = "linear"
        elif isinstance(module, nn.Embedding):
            out[name] = "embedding"
        elif conv1d and isinstance(module, conv1d):
            out[name] = "conv1d"
        elif any(True for _ in module.parameters(recurse=False)):
            out[name] = "other"
    return out
