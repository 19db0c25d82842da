"""End to end: one quick recipe run (shared by the whole file) and what it wrote.

Oracles: the pretrained file itself (base), the real PEFT library (the LoRA folder loads with
``PeftModel.from_pretrained``), and reloading every saved encoder + heads, which must give back
the accuracies the run logged.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from spectra.recipe import RecipeConfig, run_recipe
from spectra.recipe.data import build_tasks
from spectra.recipe.evaluate import accuracy
from spectra.recipe.model import MultiTaskModel, base_model_dir, load_base, multilora_config
from spectra.recipe.train import encode_tasks

CONFIG = RecipeConfig.quick(num_threads=1)
N_ADAPTED = 6 * 6  # 6 layers x (query, key, value, attention out, intermediate, output)


@pytest.fixture(scope="module")
def run(quick_run):
    """The session's quick run (tests/conftest.py), made with CONFIG."""
    result, messages = quick_run
    assert result.settings_hash == CONFIG.settings_hash()
    return result, messages


@pytest.fixture(scope="module")
def log(run) -> dict:
    return json.loads(run[0].files["log"].read_text(encoding="utf-8"))


def test_every_file_is_written(run) -> None:
    result, messages = run
    out = result.out_dir
    for name in (
        "base.safetensors",
        "base.pt",
        "full.safetensors",
        "multilora.safetensors",
        "full.pt",
        "lora.pt",
        "multilora.pt",
        "log.json",
    ):
        assert (out / name).is_file(), name
    assert (out / "lora" / "adapter_config.json").is_file()
    assert (out / "lora" / "adapter_model.safetensors").is_file()
    for method in ("full", "lora", "multilora"):
        assert (out / "heads" / f"{method}.safetensors").is_file()
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no temporary leftovers
    assert not result.reused
    assert f"full: step {CONFIG.steps}/{CONFIG.steps}, loss" in " ".join(messages)


def test_base_equals_the_pretrained_weights(run) -> None:
    pretrained = load_file(base_model_dir() / "model.safetensors")
    base = load_file(run[0].files["base"])
    dropped = {k for k in pretrained if k.startswith("pooler.")} | {"embeddings.position_ids"}
    assert set(base) == set(pretrained) - dropped
    for key, tensor in base.items():
        assert torch.equal(tensor, pretrained[key]), key
    as_pt = torch.load(run[0].files["base_pt"], weights_only=True)
    assert set(as_pt) == set(base)
    assert all(torch.equal(as_pt[k], base[k]) for k in base)


def test_full_fine_tuning_changed_every_adapted_matrix(run, log) -> None:
    base, full = load_file(run[0].files["base"]), load_file(run[0].files["full"])
    assert set(full) == set(base)
    adapted = [f"{m}.weight" for m in log["methods"]["lora"]["adapted_modules"]]
    assert len(adapted) == N_ADAPTED
    for key in adapted:
        delta = (full[key].double() - base[key].double()).abs().max().item()
        assert delta > 1e-7, key


def test_lora_folder_is_a_real_peft_adapter(run) -> None:
    from peft import PeftModel

    _, encoder = load_base()
    model = PeftModel.from_pretrained(encoder, str(run[0].files["lora"]))
    config = model.peft_config["default"]
    assert (config.r, config.lora_alpha) == (8, 16)
    lora_layers = {
        n: m for n, m in model.named_modules() if hasattr(m, "lora_B") and hasattr(m, "scaling")
    }
    assert len(lora_layers) == N_ADAPTED
    assert not any(name.endswith("pooler.dense") for name in lora_layers)
    for layer in lora_layers.values():
        assert layer.scaling["default"] == pytest.approx(2.0)  # α / r
        assert layer.lora_B["default"].weight.abs().max() > 0  # B starts at 0: it was trained


def test_multilora_scalings_left_zero(run) -> None:
    path = run[0].files["multilora"]
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    config = json.loads(meta["config"])
    assert meta["format"] == "spectra.multilora"
    assert (config["r"], config["n"], config["parameter_matched"]) == (2, 4, True)
    scalings = {k: v for k, v in tensors.items() if k.endswith(".multilora_scaling")}
    assert len(scalings) == N_ADAPTED
    for key, s in scalings.items():
        assert s.shape == (4, tensors[key.replace("scaling", "B")].shape[1])  # (n, out)
        assert s.abs().max() > 0, key  # s_i start at zero; training moved them


def _reloaded(method: str, result) -> MultiTaskModel:
    """The saved encoder of ``method`` on a fresh pretrained encoder, with its saved heads."""
    _, encoder = load_base()
    if method == "full":
        encoder.load_state_dict(load_file(result.files["full"]))
    elif method == "lora":
        from peft import PeftModel

        encoder = PeftModel.from_pretrained(encoder, str(result.files["lora"]))
    else:
        from spectra.multilora import inject_multilora, load_multilora

        inject_multilora(encoder, multilora_config(CONFIG))
        load_multilora(encoder, result.files["multilora"])
    heads = load_file(result.files[f"heads_{method}"])
    sizes = {
        k.removesuffix(".weight"): v.shape[0] for k, v in heads.items() if k.endswith(".weight")
    }
    model = MultiTaskModel(encoder, sizes)
    model.heads.load_state_dict(heads)
    return model.eval()


@pytest.mark.parametrize("method", ["full", "lora", "multilora"])
def test_saved_files_reproduce_the_logged_accuracy(run, method) -> None:
    result = run[0]
    tokenizer, _ = load_base()
    _, test = encode_tasks(tokenizer, build_tasks(CONFIG), CONFIG.max_length)
    acc = accuracy(
        _reloaded(method, result), test, pad_id=0, batch_size=64, device=torch.device("cpu")
    )
    assert acc == pytest.approx(result.accuracy[method], abs=1e-12)


def test_log_holds_curves_accuracies_and_versions(run, log) -> None:
    result = run[0]
    assert log["complete"] is True
    assert log["settings_hash"] == CONFIG.settings_hash() == result.settings_hash
    assert log["seed"] == CONFIG.seed and log["steps"] == CONFIG.steps
    assert list(log["accuracy"]) == ["chance", "before", "full", "lora", "multilora"]
    for row in log["accuracy"].values():
        assert set(row) == {"sentiment", "compare", "iris"}
        assert all(0.0 <= v <= 1.0 for v in row.values())
    for method in ("full", "lora", "multilora"):
        entry = log["methods"][method]
        assert len(entry["loss"]) == CONFIG.steps
        assert all(len(c) == CONFIG.steps for c in entry["task_loss"].values())
        assert entry["wall_s"] > 0
        assert all(v > 0 for v in entry["loss"])
    lora, multi = log["methods"]["lora"], log["methods"]["multilora"]
    assert (
        lora["adapted_modules"] == multi["adapted_modules"]
        and len(lora["adapted_modules"]) == N_ADAPTED
    )
    # parameter-matched: the same A and B counts; MultiLoRA adds n·out scalings per module
    n_scalings = sum(
        4 * (1536 if m.endswith("intermediate.dense") else 384) for m in multi["adapted_modules"]
    )
    assert multi["trainable_encoder_params"] == lora["trainable_encoder_params"] + n_scalings
    assert log["versions"]["torch"] == torch.__version__
    assert log["versions"]["peft"] is not None
    table = result.table().splitlines()
    assert table[0].split() == ["sentiment", "compare", "iris"]
    assert [line.split()[0] for line in table[1:]] == list(log["accuracy"])


def test_second_run_reuses_without_training(run) -> None:
    result = run[0]
    stamps = {p: p.stat().st_mtime_ns for p in result.out_dir.rglob("*") if p.is_file()}
    messages: list[str] = []
    again = run_recipe(CONFIG, result.out_dir, progress=messages.append)
    assert again.reused
    assert len(messages) == 1 and messages[0].startswith("reusing")
    assert again.accuracy == result.accuracy and again.files == result.files
    assert stamps == {p: p.stat().st_mtime_ns for p in result.out_dir.rglob("*") if p.is_file()}


def test_same_seed_gives_identical_full_fine_tuning(run, tmp_path: Path) -> None:
    # Only the full method, in a fresh folder: each method is seeded on its own, so the
    # weights must match the three-method run bit for bit on CPU.
    again = run_recipe(RecipeConfig.quick(num_threads=1, methods=("full",)), tmp_path)
    assert not again.reused
    assert again.files["full"].read_bytes() == run[0].files["full"].read_bytes()
    assert again.accuracy["full"] == run[0].accuracy["full"]


def test_intermediate_checkpoints_are_trainer_folders_and_the_last_is_the_final(run, log) -> None:
    from spectra.loaders import detect_kind

    out = run[0].out_dir
    steps = CONFIG.snapshot_steps()
    assert steps == (6, 12)
    for method in ("full", "lora", "multilora"):
        rels = log["methods"][method]["snapshots"]
        assert rels == [f"checkpoints/{method}/checkpoint-{s}" for s in steps]
        for rel in rels:
            assert detect_kind(out / rel) == method
    # the last checkpoint holds the final weights
    last = out / "checkpoints"
    final_lora = load_file(out / "lora" / "adapter_model.safetensors")
    snap_lora = load_file(last / "lora" / "checkpoint-12" / "adapter_model.safetensors")
    assert final_lora.keys() == snap_lora.keys()
    assert all(torch.equal(final_lora[k], snap_lora[k]) for k in final_lora)
    final_full = load_file(out / "full.safetensors")
    snap_full = load_file(last / "full" / "checkpoint-12" / "model.safetensors")
    assert all(torch.equal(final_full[k], snap_full[k]) for k in final_full)
    final_ml = load_file(out / "multilora.safetensors")
    snap_ml = load_file(last / "multilora" / "checkpoint-12" / "model.safetensors")
    assert all(torch.equal(final_ml[k], snap_ml[k]) for k in final_ml)
    # the first one differs: training went on after it
    first = load_file(last / "lora" / "checkpoint-6" / "adapter_model.safetensors")
    assert any(not torch.equal(first[k], final_lora[k]) for k in final_lora)


def test_base_from_links_the_shared_base(run, tmp_path: Path) -> None:
    config = RecipeConfig.quick(num_threads=1, methods=("lora",), steps=2, snapshots=0)
    again = run_recipe(config, tmp_path / "r", base_from=run[0].out_dir)
    for name in ("base.safetensors", "base.pt"):
        src, dst = run[0].out_dir / name, again.out_dir / name
        assert dst.read_bytes() == src.read_bytes()
        assert dst.stat().st_ino == src.stat().st_ino  # a hard link, not a copy
