"""``run_recipe``: train the three methods on the task mix and write real checkpoints.

Output folder (names relative to ``out_dir``):

=========================  ==============================================================
``base.safetensors``       the pretrained encoder before training (pooler excluded)
``base.pt``                the same tensors as a plain torch state dict
``full.safetensors``       the encoder after full fine-tuning, same keys as ``base``
``lora/``                  the PEFT adapter folder written by ``save_pretrained``
``multilora.safetensors``  the spectra MultiLoRA format, from the reference layer
``heads/<method>.safetensors``  each method's task heads (kept out of the encoder files)
``checkpoints/<method>/``  ``checkpoint-<step>/`` intermediate checkpoints (``snapshots``)
``log.json``               settings and their hash, losses, accuracies, times, versions
=========================  ==============================================================

Every method starts from the same encoder weights, the same seeded heads, the same batches
in the same order and the same number of steps.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from spectra.engine.device import resolve_device
from spectra.loaders.plain_lora import write_lora_state_dict
from spectra.multilora import save_multilora
from spectra.parallel import available_cores
from spectra.recipe import files
from spectra.recipe.config import Method, RecipeConfig
from spectra.recipe.data import TaskData, build_tasks
from spectra.recipe.evaluate import accuracy, probe_accuracy
from spectra.recipe.log import LOG_NAME, build_log, method_entry, read_complete_log
from spectra.recipe.model import (
    BASE_MODEL_NAME,
    MultiTaskModel,
    check_same_targets,
    load_base,
    multilora_config,
    n_trainable_encoder,
    planned_targets,
    prepare_full,
    prepare_lora,
    prepare_multilora,
)
from spectra.recipe.train import Encoded, Progress, batch_schedule, encode_tasks, train


@dataclass(frozen=True)
class RecipeResult:
    """What a recipe run wrote, and how well each method did.

    Attributes:
        out_dir: The output folder.
        files: Output name → path: ``base``, ``base_pt``, ``log``, each trained method's
            encoder (``full``, ``lora`` (a folder), ``multilora``) and ``heads_<method>``.
        accuracy: Row → task → held-out accuracy; rows ``chance``, ``before`` (linear probe on
            the frozen base encoder), then each method trained.
        wall_s: Seconds per phase (``load``, ``before``, each method, ``total``).
        settings_hash: :meth:`RecipeConfig.settings_hash` of the run.
        reused: True when a complete earlier run with the same settings was returned.
    """

    out_dir: Path
    files: dict[str, Path]
    accuracy: dict[str, dict[str, float]]
    wall_s: dict[str, float]
    settings_hash: str
    reused: bool = False
    methods: tuple[str, ...] = field(default=())

    def table(self) -> str:
        """The accuracy table as aligned text, one row per line."""
        tasks = list(next(iter(self.accuracy.values())))
        lines = ["".join([f"{'':<10}"] + [f"{t:>11}" for t in tasks])]
        for row, accs in self.accuracy.items():
            lines.append("".join([f"{row:<10}"] + [f"{accs[t]:>11.3f}" for t in tasks]))
        return "\n".join(lines)


@dataclass
class _Run:
    """What every method's training shares within one run."""

    config: RecipeConfig
    out_dir: Path
    device: torch.device
    encoder: torch.nn.Module  # the pretrained encoder, never trained itself
    targets: list[str]  # module paths both adapters adapt ([] when neither runs)
    tasks: tuple[TaskData, ...]
    pad_id: int
    train: dict[str, Encoded]
    test: dict[str, Encoded]
    schedule: list[dict[str, list[int]]]
    progress: Progress

    def new_model(self) -> MultiTaskModel:
        """A copy of the pretrained encoder with heads from the seeded global generator."""
        torch.manual_seed(self.config.seed)
        sizes = {t.name: len(t.labels) for t in self.tasks}
        return MultiTaskModel(copy.deepcopy(self.encoder), sizes)

    def eval_kwargs(self) -> dict[str, object]:
        return {
            "pad_id": self.pad_id,
            "batch_size": self.config.eval_batch_size,
            "device": self.device,
        }


def run_recipe(
    config: RecipeConfig,
    out_dir: Path,
    *,
    progress: Progress | None = None,
    reuse: bool = True,
    base_from: Path | None = None,
) -> RecipeResult:
    """Fine-tune all-MiniLM-L6-v2 on the task mix with each method; write the checkpoints.

    Args:
        config: What to train and for how long (:meth:`RecipeConfig.quick` for a smoke run).
        out_dir: Output folder (created if missing); the file layout is in the module docstring.
        progress: Called with one-line messages (phase, step counts per method, accuracies).
        reuse: When ``out_dir`` holds a complete run whose ``log.json`` has the same settings
            hash, return it without training.
        base_from: A folder already holding this recipe's ``base.safetensors`` and ``base.pt``
            (:func:`write_base`): hard-link them (copy across file systems) instead of writing
            them again. Many runs of one study share one base this way.

    Returns:
        The paths written and the accuracy table.

    Raises:
        MissingDependencyError: A package of the ``demo`` extra is missing.
        OptionError: ``device="cuda"`` without CUDA, or ``target_modules`` that match
            nothing or that PEFT and MultiLoRA read differently (checked before training).
    """
    out_dir = Path(out_dir)
    say = progress or (lambda _msg: None)
    if reuse and (log := read_complete_log(out_dir, config.settings_hash())) is not None:
        say(f"reusing the complete run in {out_dir} (settings {config.settings_hash()})")
        return _result_from_log(out_dir, log, reused=True)
    (out_dir / LOG_NAME).unlink(missing_ok=True)  # the folder no longer holds a complete run
    with _torch_threads(config.num_threads) as threads:
        log = _train_all(config, out_dir, say, threads, base_from)
    files.write_json(out_dir / LOG_NAME, log)
    return _result_from_log(out_dir, log, reused=False)


def _train_all(
    config: RecipeConfig, out_dir: Path, say: Progress, threads: int, base_from: Path | None
) -> dict:
    """Load, write the base, probe, train each method; return the log (not yet written)."""
    t0 = time.perf_counter()
    wall: dict[str, float] = {}
    say(f"loading {BASE_MODEL_NAME} and building the task mix")
    run = _setup(config, out_dir, say, base_from)
    wall["load"] = time.perf_counter() - t0
    t = time.perf_counter()
    say("before: linear probe on the frozen base encoder")
    before = probe_accuracy(
        run.new_model().to(run.device),
        run.train,
        run.test,
        steps=config.probe_steps,
        **run.eval_kwargs(),
    )
    wall["before"] = time.perf_counter() - t
    entries = {}
    for method in config.methods:
        entries[method] = _train_method(method, run)
        wall[method] = entries[method]["wall_s"]
    wall["total"] = time.perf_counter() - t0
    return build_log(config, run.tasks, before, entries, wall, run.device, threads)


@functools.lru_cache(maxsize=1)
def _pretrained() -> tuple[object, torch.nn.Module]:
    """:func:`load_base`, once per process: runs deep-copy the encoder and never change it."""
    return load_base()


def write_base(out_dir: Path) -> tuple[Path, Path]:
    """The pretrained encoder as the recipe's ``base.safetensors`` and ``base.pt`` in ``out_dir``.

    Returns:
        (safetensors path, torch path).
    """
    base = _pretrained()[1].state_dict()  # pooler excluded (see model.py); float32
    meta = {"base_model": BASE_MODEL_NAME, "pooling": "mean"}
    st = files.write_safetensors(Path(out_dir) / "base.safetensors", base, meta)
    return st, files.write_torch_state_dict(Path(out_dir) / "base.pt", base)


def _setup(config: RecipeConfig, out_dir: Path, say: Progress, base_from: Path | None) -> _Run:
    device = resolve_device(config.device)
    tasks = build_tasks(config)
    tokenizer, encoder = _pretrained()
    adapters = {"lora", "multilora"} & set(config.methods)
    targets = planned_targets(encoder, config) if adapters else []  # fail before training
    if base_from is None:
        write_base(out_dir)
    else:
        for name in ("base.safetensors", "base.pt"):
            files.link_or_copy(Path(base_from) / name, out_dir / name)
    say(f"base.safetensors and base.pt in {out_dir}; device {device}")
    train_data, test_data = encode_tasks(tokenizer, tasks, config.max_length)
    sizes = {name: len(d.ids) for name, d in train_data.items()}
    schedule = batch_schedule(sizes, config.steps, config.batch_per_task, config.seed)
    pad_id = int(tokenizer.pad_token_id)  # type: ignore[attr-defined]
    return _Run(
        config,
        out_dir,
        device,
        encoder,
        targets,
        tasks,
        pad_id,
        train_data,
        test_data,
        schedule,
        say,
    )


def _train_method(method: Method, run: _Run) -> dict:
    """Prepare, train, evaluate and save one method. Returns its log entry."""
    config = run.config
    model = run.new_model()
    targets: list[str] = []
    if method == "full":
        prepare_full(model)
    else:
        prepare = prepare_lora if method == "lora" else prepare_multilora
        targets = prepare(model, config)
        check_same_targets(run.targets, targets)
    lr = config.lr_full if method == "full" else config.lr_adapter
    model.to(run.device)
    snapshots: list[str] = []

    def after_step(step: int) -> None:
        if step in config.snapshot_steps():
            rel = f"{files.SNAPSHOT_DIR}/{method}/checkpoint-{step}"
            _save_snapshot(method, model, run, run.out_dir / rel)
            snapshots.append(rel)

    stats = train(
        model, lr, run.train, run.schedule, config,
        pad_id=run.pad_id, device=run.device, label=method, progress=run.progress,
        after_step=after_step,
    )  # fmt: skip
    acc = accuracy(model, run.test, **run.eval_kwargs())
    run.progress(
        f"{method}: held-out accuracy " + ", ".join(f"{k} {v:.3f}" for k, v in acc.items())
    )
    _save_method(method, model, run)
    return method_entry(stats, acc, lr, n_trainable_encoder(model), targets, snapshots)


def _save_snapshot(method: Method, model: MultiTaskModel, run: _Run, dest: Path) -> None:
    """One intermediate checkpoint, laid out as an HF Trainer ``checkpoint-<step>/`` folder:
    the PEFT adapter files (LoRA); ``model.safetensors`` in the MultiLoRA format (its metadata
    says so; the folder's weights file keeps the name every reader looks for); or
    ``model.safetensors`` + ``config.json`` of the encoder (full fine-tuning, the same keys as
    ``base.safetensors``)."""
    if method == "lora":
        files.write_peft_adapter(model.encoder, dest)
        return
    dest.mkdir(parents=True, exist_ok=True)
    if method == "full":
        state = model.encoder.state_dict()
        files.write_safetensors(dest / "model.safetensors", state, {"format": "pt"})
        model.encoder.config.save_pretrained(str(dest))  # config.json
    else:
        save_multilora(
            model.encoder,
            dest / "model.safetensors",
            multilora_config(run.config),
            base_model=BASE_MODEL_NAME,
        )


def _save_method(method: Method, model: MultiTaskModel, run: _Run) -> None:
    dest = run.out_dir / files.ENCODER_FILES[method]
    dest_pt = run.out_dir / files.ENCODER_PT_FILES[method]
    if method == "full":
        state = model.encoder.state_dict()
        files.write_safetensors(dest, state, {"base_model": BASE_MODEL_NAME})
        files.write_torch_state_dict(dest_pt, state)
    elif method == "lora":
        from peft import get_peft_model_state_dict

        files.write_peft_adapter(model.encoder, dest)
        write_lora_state_dict(
            dest_pt, get_peft_model_state_dict(model.encoder),
            lora_alpha=run.config.lora_alpha, r=run.config.lora_r,
        )  # fmt: skip
    else:
        for path in (dest, dest_pt):
            save_multilora(
                model.encoder, path, multilora_config(run.config), base_model=BASE_MODEL_NAME
            )
    labels = {t.name: t.labels for t in run.tasks}
    files.write_heads(
        run.out_dir / "heads" / f"{method}.safetensors", model.head_state(), labels, method
    )


def _result_from_log(out_dir: Path, log: dict, *, reused: bool) -> RecipeResult:
    return RecipeResult(
        out_dir=out_dir,
        files={k: out_dir / v for k, v in log["files"].items()},
        accuracy=log["accuracy"],
        wall_s=log["wall_s"],
        settings_hash=log["settings_hash"],
        reused=reused,
        methods=tuple(log["methods"]),
    )


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[int]:
    """Set torch's intra-op threads for the run (None: every available core); restore after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n or available_cores())
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def log_json(result: RecipeResult) -> dict:
    """The run's ``log.json`` as a dict."""
    return json.loads(result.files["log"].read_text(encoding="utf-8"))
