"""Real checkpoints of a tiny BERT for CLI tests: base, full fine-tune, PEFT LoRA, MultiLoRA."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.files import tree_hash  # noqa: F401  (re-exported)
from tests.models import tiny_bert

TARGETS = ("query", "value")


@dataclass(frozen=True)
class Ckpts:
    base: Path
    full: Path
    lora: Path
    multilora: Path


def _tiny_bert():
    torch.manual_seed(0)
    return tiny_bert(hidden_size=32, intermediate_size=64, pooling=False)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


@pytest.fixture(scope="session")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> Ckpts:
    from peft import LoraConfig, get_peft_model

    from spectra.multilora.format import MultiLoRAFileConfig, write_multilora

    root = tmp_path_factory.mktemp("ckpts")
    model = _tiny_bert()
    base_sd = _state(model)
    save_file(base_sd, root / "base.safetensors")

    g = torch.Generator().manual_seed(1)
    full_sd = {k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in base_sd.items()}
    save_file(full_sd, root / "full.safetensors")

    peft_model = get_peft_model(
        _tiny_bert(), LoraConfig(r=4, lora_alpha=8, target_modules=list(TARGETS))
    )
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    peft_model.save_pretrained(root / "lora")

    tensors = {}
    n, r = 3, 2
    for layer in range(2):
        for t in TARGETS:
            m = f"encoder.layer.{layer}.attention.self.{t}"
            tensors[m + ".multilora_A"] = torch.randn(n, r, 32, generator=g)
            tensors[m + ".multilora_B"] = torch.randn(n, 32, r, generator=g)
            tensors[m + ".multilora_scaling"] = torch.randn(n, 32, generator=g)
    write_multilora(
        root / "multilora.safetensors",
        tensors,
        MultiLoRAFileConfig(r=r, n=n, lora_alpha=4.0, target_modules=TARGETS),
    )
    return Ckpts(
        root / "base.safetensors",
        root / "full.safetensors",
        root / "lora",
        root / "multilora.safetensors",
    )


@dataclass(frozen=True)
class Adapters:
    """Adapters of the tiny BERT of :func:`ckpts` in the formats that need no base, plus one
    folder holding two of them. ``delta`` holds ΔW = s·B·A per (file, module), float64, formed
    here from the stored factors (the independent answer)."""

    plain: Path
    kohya: Path
    loha: Path
    folder: Path
    delta: dict[tuple[str, str], torch.Tensor]


def _kohya_name(module: str) -> str:
    return "lora_te_" + module.replace(".", "_")


@pytest.fixture(scope="session")
def adapters(ckpts: Ckpts, tmp_path_factory: pytest.TempPathFactory) -> Adapters:
    import shutil

    from safetensors.torch import load_file

    from spectra.loaders import write_lora_state_dict

    root = tmp_path_factory.mktemp("adapters")
    peft_sd = load_file(ckpts.lora / "adapter_model.safetensors")
    plain = write_lora_state_dict(root / "plain.pt", peft_sd, lora_alpha=8, r=4)
    delta: dict[tuple[str, str], torch.Tensor] = {}
    for key, a in peft_sd.items():
        if key.endswith("lora_A.weight"):
            module = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
            b = peft_sd[key.replace("lora_A", "lora_B")]
            delta[("lora", module)] = (8 / 4) * b.double() @ a.double()

    g = torch.Generator().manual_seed(5)
    kohya, loha = {}, {}
    for layer in range(2):
        for t in TARGETS:
            m = f"encoder.layer.{layer}.attention.self.{t}"
            down, up = torch.randn(2, 32, generator=g), torch.randn(32, 2, generator=g)
            kohya |= {
                f"{_kohya_name(m)}.lora_down.weight": down,
                f"{_kohya_name(m)}.lora_up.weight": up,
                f"{_kohya_name(m)}.alpha": torch.tensor(1.0),
            }
            delta[("kohya", _kohya_name(m))] = (1.0 / 2) * up.double() @ down.double()
            w1a, w1b = torch.randn(32, 2, generator=g), torch.randn(2, 32, generator=g)
            w2a, w2b = torch.randn(32, 2, generator=g), torch.randn(2, 32, generator=g)
            loha |= {
                f"{_kohya_name(m)}.hada_w1_a": w1a,
                f"{_kohya_name(m)}.hada_w1_b": w1b,
                f"{_kohya_name(m)}.hada_w2_a": w2a,
                f"{_kohya_name(m)}.hada_w2_b": w2b,
            }
    meta = {"ss_network_module": "networks.lora", "ss_network_dim": "2"}
    save_file(kohya, root / "kohya.safetensors", metadata=meta)
    save_file(loha, root / "loha.safetensors", metadata={"ss_network_module": "lycoris.kohya"})
    folder = root / "folder"
    folder.mkdir()
    shutil.copytree(ckpts.lora, folder / "lora")
    shutil.copy(plain, folder / "plain.pt")
    return Adapters(plain, root / "kohya.safetensors", root / "loha.safetensors", folder, delta)
