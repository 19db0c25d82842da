"""Training checkpoints written by torch.save the way training scripts write them: the model's
state dict nested under a container entry, beside an optimizer's state, an epoch and a loss.
The container's name must not reach any key, and a full fine-tune saved so must compare
against its base exactly as the bare state dict does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from spectra.io import open_tensors
from spectra.io.torch_file import CONTAINERS
from spectra.loaders import LoadOptions, open_checkpoint
from tests.models import tiny_bert


def _trained_one_step(model: nn.Module) -> torch.optim.Optimizer:
    """One real AdamW step, so the optimizer state holds tensors shaped like the weights."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = torch.randint(0, 50, (2, 6))
    model(input_ids=ids).last_hidden_state.square().mean().backward()
    opt.step()
    return opt


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module, nn.Module]:
    torch.manual_seed(0)
    base = tiny_bert()
    out = tmp_path_factory.mktemp("ckpt")
    save_file({k: v.contiguous() for k, v in base.state_dict().items()}, out / "base.safetensors")
    tuned = tiny_bert()
    tuned.load_state_dict(base.state_dict())
    opt = _trained_one_step(tuned)
    return out, tuned, opt  # type: ignore[return-value]


@pytest.mark.parametrize("container", CONTAINERS)
def test_each_container_is_read_and_its_name_is_no_key(trained, container: str) -> None:
    out, model, opt = trained
    f = out / f"{container}.pt"
    torch.save(
        {
            "epoch": 3,
            "loss": torch.tensor(0.25),  # a 0-d tensor beside the container: no weight
            container: model.state_dict(),
            "optimizer_state_dict": opt.state_dict(),
        },
        f,
    )
    src = open_tensors(f)
    state = model.state_dict()
    keys = src.keys()
    assert keys == sorted(state)
    assert not any(k.startswith(container) for k in keys)
    for key in ("encoder.layer.0.attention.self.query.weight", "embeddings.word_embeddings.weight"):
        assert torch.equal(src.get(key), state[key])
    desc = src.description  # type: ignore[attr-defined]
    assert f"read from {container!r}" in desc
    assert "optimizer_state_dict" in desc and "loss" in desc and "epoch" in desc


def test_trained_weights_win_over_their_ema_copy(trained) -> None:
    out, model, _ = trained
    ema = {k: v + 1 for k, v in model.state_dict().items()}
    f = out / "both.pt"
    torch.save({"model_ema": ema, "model_state_dict": model.state_dict(), "step": 10}, f)
    key = "encoder.layer.1.output.dense.weight"
    assert torch.equal(open_tensors(f).get(key), model.state_dict()[key])


def test_a_container_without_tensors_is_passed_over(trained) -> None:
    """``model`` names the architecture here; the weights sit under ``module`` (DeepSpeed)."""
    out, model, _ = trained
    f = out / "named.pt"
    torch.save({"model": {"arch": "bert", "layers": 2}, "module": model.state_dict()}, f)
    assert open_tensors(f).keys() == sorted(model.state_dict())


def test_full_fine_tune_in_model_state_dict_reads_like_the_bare_state_dict(trained) -> None:
    out, model, opt = trained
    nested, bare = out / "nested.pt", out / "bare.pt"
    torch.save({"model_state_dict": model.state_dict(), "optimizer": opt.state_dict()}, nested)
    torch.save(model.state_dict(), bare)
    base = open_tensors(out / "base.safetensors")
    got, want = open_checkpoint(nested, base=base), open_checkpoint(bare, base=base)
    names = [m.module for m in got.modules()]
    assert names == [m.module for m in want.modules()]
    assert not any("model_state_dict" in n for n in names)
    assert got.report.only_in_tuned == [] and got.report.only_in_base == []
    for name in names[:4]:
        assert torch.equal(got.update(name).materialize(), want.update(name).materialize())
    query = "encoder.layer.0.attention.self.query"
    w0 = base.get(f"{query}.weight").double()
    expected = model.state_dict()[f"{query}.weight"].double() - w0  # float64 reference
    delta = (
        open_checkpoint(nested, base=base, options=LoadOptions(dtype=torch.float64))
        .update(query)
        .materialize()
    )
    assert torch.equal(delta, expected)
