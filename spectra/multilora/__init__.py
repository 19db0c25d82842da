"""The reference MultiLoRA layer (arXiv 2311.11501), its injection, and its checkpoint format.

Typical use::

    config = MultiLoRAConfig(r=8, n=4, lora_alpha=16, target_modules=("query", "value"))
    inject_multilora(model, config)
    mark_only_multilora_trainable(model)
    ...  # train
    save_multilora(model, "adapter.safetensors", config, base_model="bert-base-uncased")
"""

from spectra.multilora.config import MultiLoRAConfig
from spectra.multilora.format import MultiLoRAFileConfig, write_multilora
from spectra.multilora.inject import (
    inject_multilora,
    load_multilora,
    mark_only_multilora_trainable,
    merge_multilora,
    multilora_layers,
    multilora_state_dict,
    save_multilora,
    unmerge_multilora,
)
from spectra.multilora.layer import MultiLoRALinear

__all__ = [
    "MultiLoRAConfig",
    "MultiLoRAFileConfig",
    "MultiLoRALinear",
    "inject_multilora",
    "load_multilora",
    "mark_only_multilora_trainable",
    "merge_multilora",
    "multilora_layers",
    "multilora_state_dict",
    "save_multilora",
    "unmerge_multilora",
    "write_multilora",
]
