"""SpectraCallback in a real Trainer run: the last logged metrics equal `spectra compare` on the
adapter saved at that step; the logs reach the other callbacks; stop_on ends training."""

from __future__ import annotations

import json
import math
import statistics

import pytest

from spectra.analysis import AnalysisOptions, analyze
from spectra.diagnose import Thresholds
from spectra.errors import OptionError
from spectra.track import SpectraCallback
from tests.track.conftest import EVERY, STEPS, Run
from tests.track.training import peft_model, train

METRICS = ("top1_energy", "effective_rank", "stable_rank")


def _compare_rows(path) -> list[dict]:
    """`spectra compare` (the library call behind it) on one saved adapter."""
    return analyze(None, [path], options=AnalysisOptions(similarity=False))["modules"]


def _k90(values: list[float]) -> int:
    """k at 90 % of Σσ², written out (independent of spectra.engine.metrics)."""
    total, acc = sum(v * v for v in values), 0.0
    for k, v in enumerate(values, start=1):
        acc += v * v
        if acc >= 0.9 * total - 1e-12 * total:
            return k
    return len(values)


def _expected_summary(rows: list[dict]) -> dict[str, float]:
    """Mean and max per module type and over all, computed from compare's rows."""
    out = {}
    groups = {"all": rows}
    for row in rows:
        groups.setdefault(row["module_type"], []).append(row)
    for metric in (*METRICS, "k90"):
        for group, members in groups.items():
            if metric == "k90":
                xs = [float(_k90(r["singular_values"])) for r in members]
            else:
                xs = [r["metrics"][metric] for r in members]
            out[f"spectra/{metric}/{group}/mean"] = statistics.fmean(xs)
            out[f"spectra/{metric}/{group}/max"] = max(xs)
    return out


def _last_logged(run: Run) -> dict[str, float]:
    logged = [h for h in run.trainer.state.log_history if "spectra/top1_energy/all/mean" in h]
    assert [h["step"] for h in logged] == list(range(EVERY, STEPS + 1, EVERY))
    return logged[-1]


def _check_equal(run: Run, saved) -> None:
    rows = _compare_rows(saved)
    assert len(rows) == 4  # 2 layers × query, value
    logged = _last_logged(run)
    expected = _expected_summary(rows)
    for key, value in expected.items():
        assert logged[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key
    # per module, in the JSONL line of the last step: exactly compare's numbers
    lines = [json.loads(x) for x in run.jsonl.read_text().splitlines()]
    assert [x["step"] for x in lines] == list(range(EVERY, STEPS + 1, EVERY))
    last = lines[-1]["modules"]
    assert set(last) == {r["module"] for r in rows}
    for row in rows:
        for metric in METRICS:
            assert last[row["module"]][metric] == row["metrics"][metric]
        assert last[row["module"]]["k90"] == _k90(row["singular_values"])


def test_peft_last_logged_metrics_equal_compare_on_saved_adapter(peft_run: Run) -> None:
    saved = peft_run.out / f"checkpoint-{STEPS}"
    assert (saved / "adapter_model.safetensors").is_file()  # save_pretrained's adapter
    _check_equal(peft_run, saved)


def test_multilora_last_logged_metrics_equal_compare_on_saved_file(multilora_run: Run) -> None:
    saved = multilora_run.out / f"checkpoint-{STEPS}" / "multilora.safetensors"
    _check_equal(multilora_run, saved)
    last = json.loads(multilora_run.jsonl.read_text().splitlines()[-1])
    assert last["kind"] == "multilora"
    rows = analyze(None, [saved], options=AnalysisOptions(similarity=False))["modules"]
    for row in rows:  # collapse φ: the larger mean off-diagonal φ of compare's block
        block = row["multilora"]
        expected = max(block["phi_left"][0][1], block["phi_right"][0][1])  # n = 2: one pair
        assert last["modules"][row["module"]]["multilora_phi"] == pytest.approx(expected)


def test_logs_reach_the_other_callbacks(peft_run: Run) -> None:
    received = [(step, logs) for step, logs in peft_run.recorder.logs if any(
        k.startswith("spectra/") for k in logs)]  # fmt: skip
    assert [step for step, _ in received] == list(range(EVERY, STEPS + 1, EVERY))
    assert received[-1][1]["spectra/top1_energy/all/mean"] == pytest.approx(
        _last_logged(peft_run)["spectra/top1_energy/all/mean"]
    )
    # a few scalars, not one per module
    spectra_keys = [k for k in received[-1][1] if k.startswith("spectra/")]
    assert all(math.isfinite(received[-1][1][k]) for k in spectra_keys)
    assert len(spectra_keys) < 40


def _stop_run(tmp_path, thresholds: Thresholds):
    made = {}

    def make(trainer):
        made["cb"] = SpectraCallback(trainer, every=2, stop_on="dominated", thresholds=thresholds)
        return [made["cb"]]

    trainer = train(peft_model(), tmp_path, steps=STEPS, make_callbacks=make)
    return trainer, made["cb"]


def test_stop_on_dominated_ends_training_with_a_message(tmp_path, caplog) -> None:
    # every module of rank >= 2 counts as dominated: top-1 share >= 0
    with caplog.at_level("WARNING", logger="spectra.track"):
        trainer, cb = _stop_run(tmp_path, Thresholds(dominated_top1_energy=0.0))
    assert trainer.state.global_step == 2
    assert "reached 'dominated'" in cb.stop_message
    assert "dominated: 4 of 4 modules" in cb.stop_message
    assert cb.stop_message in caplog.text


def test_stop_on_not_reached_trains_to_the_end(tmp_path) -> None:
    # nothing is dominated: top-1 share >= 1 and effective rank / rank <= 0 never hold here
    trainer, cb = _stop_run(
        tmp_path, Thresholds(dominated_top1_energy=1.0, dominated_erank_ratio=0.0)
    )
    assert trainer.state.global_step == STEPS
    assert cb.stop_message is None
    assert cb.tracker.last.verdict == "ok"


def test_callback_without_trainer_is_refused() -> None:
    with pytest.raises(OptionError, match="needs the Trainer"):
        SpectraCallback(None)


def _trainer(model, out):
    """A real Trainer around ``model``, not trained."""
    from transformers import Trainer, TrainingArguments

    from tests.track.training import Tokens

    args = TrainingArguments(output_dir=str(out), max_steps=1, report_to=[], use_cpu=True)
    return Trainer(model=model, args=args, train_dataset=Tokens())


def test_model_without_adapter_is_refused_when_the_callback_is_made(tmp_path) -> None:
    from spectra.errors import AdapterConfigError
    from tests.track.training import tiny_classifier

    trainer = _trainer(tiny_classifier(), tmp_path)
    with pytest.raises(AdapterConfigError, match="no PEFT LoRA layer"):
        SpectraCallback(trainer, every=1)
    assert trainer.state.global_step == 0


def test_settings_are_the_trackers(tmp_path) -> None:
    trainer = _trainer(peft_model(), tmp_path)
    thresholds = Thresholds(dominated_top1_energy=0.0)
    cb = SpectraCallback(
        trainer, every=3, jsonl=tmp_path / "t.jsonl", stop_on="collapsed",
        thresholds=thresholds, modules="query", prefix="p",
    )  # fmt: skip
    t = cb.tracker
    assert (t.every, t.jsonl, t.stop_on, t.thresholds, t.prefix) == (
        3, tmp_path / "t.jsonl", "collapsed", thresholds, "p",
    )  # fmt: skip
    assert t.options.modules == "query"
    assert SpectraCallback(trainer).tracker.every == 50  # Tracker's default
    with pytest.raises(OptionError, match="every must be a positive integer"):
        SpectraCallback(trainer, every=0)
    with pytest.raises(TypeError, match="evry"):
        SpectraCallback(trainer, evry=5)
