"""Inconsistent checkpoints: files that parse but contradict themselves or each other.

Every refusal goes through every command and names the file and the key or field; keys that
exist on one side only are reported (how many, which) while the rest is still analysed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from spectra.multilora.format import MultiLoRAFileConfig, file_metadata
from tests.security.hostile import (
    COMMANDS,
    IN,
    LORA_CONFIG,
    MODULES,
    OUT,
    R,
    assert_refused,
    command_args,
    lora_state,
    multilora_tensors,
    write_adapter,
)

A0 = f"base_model.model.{MODULES[0]}.lora_A.weight"
B0 = f"base_model.model.{MODULES[0]}.lora_B.weight"


def _without(key: str) -> dict[str, torch.Tensor]:
    return {k: v for k, v in lora_state().items() if k != key}


def _refused_by_every_command(run_cli, base: Path, bad: Path, out: Path, *needles: str) -> None:
    """Every command reading ``bad`` (outputs in ``out``) is refused in one line naming ``bad``
    and every needle, and leaves ``bad`` unchanged."""
    for command in COMMANDS:
        res = run_cli(*command_args(command, base, bad, out), inputs=(bad,))
        assert_refused(res, str(bad), *needles)


def _config(**changes: object) -> dict[str, object]:
    cfg = {**LORA_CONFIG, **changes}
    return {k: v for k, v in cfg.items() if v is not _DROP}


_DROP = object()

# name → (tensors or None for the valid ones, config dict / raw text, needles)
ADAPTER_CASES: dict[str, tuple[dict | None, dict | str, tuple[str, ...]]] = {
    "r-zero": (None, _config(r=0), ("adapter_config.json [r]", "positive")),
    "r-negative": (None, _config(r=-2), ("adapter_config.json [r]", "positive")),
    "r-string": (None, _config(r="2"), ("adapter_config.json [r]",)),
    "r-float": (None, _config(r=2.5), ("adapter_config.json [r]",)),
    "alpha-missing": (None, _config(lora_alpha=_DROP), ("[lora_alpha]", "missing")),
    "alpha-string": (None, _config(lora_alpha="16"), ("[lora_alpha]", "number")),
    "alpha-nan": (None, '{"peft_type": "LORA", "r": 2, "lora_alpha": NaN}', ("[lora_alpha]",)),
    "alpha-infinite": (
        None,
        '{"peft_type": "LORA", "r": 2, "lora_alpha": 1e999}',
        ("[lora_alpha]",),
    ),
    "rank-pattern-bad-regex": (None, _config(rank_pattern={"(": 2}), ("rank_pattern", "regex")),
    "rank-pattern-catastrophic-regex": (
        None,
        _config(rank_pattern={"(a+)+b": 2}),
        ("rank_pattern", "exponential"),
    ),
    "rank-pattern-zero": (None, _config(rank_pattern={"q": 0}), ("rank_pattern",)),
    "rank-pattern-not-object": (None, _config(rank_pattern=["q"]), ("[rank_pattern]",)),
    "alpha-pattern-string": (None, _config(alpha_pattern={"q": "x"}), ("alpha_pattern",)),
    "fan-in-fan-out-not-bool": (None, _config(fan_in_fan_out="yes"), ("[fan_in_fan_out]",)),
    "target-modules-number": (None, _config(target_modules=5), ("[target_modules]",)),
    "peft-type-missing": (None, _config(peft_type=_DROP), ("[peft_type]",)),
    "peft-type-other": (None, _config(peft_type="IA3"), ("[peft_type]", "IA3")),
    "config-not-object": (None, "[1, 2]", ("adapter_config.json", "object")),
    "config-not-json": (None, '{"r": 2,', ("adapter_config.json", "JSON")),
    "config-empty": (None, "", ("adapter_config.json", "JSON")),
    "config-nested-too-deep": (None, "[" * 50_000 + "]" * 50_000, ("adapter_config.json", "deep")),
    "rank-disagrees-with-r": (None, _config(r=3), ("adapter_model.safetensors", "r = 3")),
    "rank-disagrees-with-pattern": (
        None,
        _config(rank_pattern={"q": 4}),
        ("adapter_model.safetensors", "rank_pattern"),
    ),
    "lora_A-without-lora_B": (_without(B0), LORA_CONFIG, ("adapter_model.safetensors", "lora_B")),
    "lora_B-without-lora_A": (_without(A0), LORA_CONFIG, ("adapter_model.safetensors", "lora_A")),
    "B-inner-size-differs": (
        {**lora_state(), B0: torch.randn(OUT, R + 1)},
        LORA_CONFIG,
        ("adapter_model.safetensors", f"({OUT}, {R + 1})"),
    ),
    "A-is-1-D": ({**lora_state(), A0: torch.randn(R * IN)}, LORA_CONFIG, (f"({R * IN},)",)),
    "factors-not-float": (
        {**lora_state(), A0: torch.ones(R, IN, dtype=torch.int8)},
        LORA_CONFIG,
        ("adapter_model.safetensors", "lora_A", "int8"),
    ),
    "no-lora-keys": ({"w.weight": torch.randn(3, 3)}, LORA_CONFIG, ("adapter_model.safetensors",)),
    "adapter-larger-than-base": (
        {**lora_state(), A0: torch.randn(R, IN + 1)},
        LORA_CONFIG,
        ("adapter_model.safetensors", MODULES[0], f"({OUT}, {IN + 1})"),
    ),
}


@pytest.mark.parametrize("case", sorted(ADAPTER_CASES))
def test_invalid_adapter_is_refused_by_every_command(ckpts, run_cli, tmp_path, case) -> None:
    tensors, config, needles = ADAPTER_CASES[case]
    adapter = write_adapter(tmp_path / "adapter", tensors, config)
    _refused_by_every_command(run_cli, ckpts.base, adapter, tmp_path, *needles)


def test_pattern_keys_that_decide_nothing_are_reported(ckpts, run_cli, tmp_path) -> None:
    """A rank_pattern / alpha_pattern key matching no module has no effect (PEFT ignores it);
    the analysis goes on and says so."""
    cfg = _config(rank_pattern={"nomatch": 7}, alpha_pattern={"also_nomatch": 3.0})
    adapter = write_adapter(tmp_path / "adapter", None, cfg)
    res = run_cli("inspect", adapter, inputs=(adapter,))
    assert res.code == 0, res.err
    notes = [ln for ln in res.out.splitlines() if "have no effect" in ln]
    assert len(notes) == 2, res.out
    assert "rank_pattern keys ['nomatch']" in notes[0]
    assert "alpha_pattern keys ['also_nomatch']" in notes[1]


def test_shapes_that_differ_from_the_base_name_the_key(ckpts, run_cli, tmp_path) -> None:
    sd = load_file(ckpts.full)
    key = f"{MODULES[1]}.weight"
    sd[key] = torch.randn(OUT, IN - 1)
    tuned = tmp_path / "tuned.safetensors"
    save_file(sd, tuned)
    shapes = (f"({OUT}, {IN - 1})", f"({OUT}, {IN})")
    _refused_by_every_command(run_cli, ckpts.base, tuned, tmp_path, key, *shapes)


def test_one_sided_keys_are_counted_named_and_the_rest_analysed(ckpts, run_cli, tmp_path) -> None:
    sd = load_file(ckpts.full)
    del sd[f"{MODULES[0]}.weight"]
    sd["extra.proj.weight"] = torch.randn(4, 4)
    sd["extra.other.weight"] = torch.randn(4, 4)
    tuned = tmp_path / "tuned.safetensors"
    save_file(sd, tuned)
    for command in COMMANDS:
        res = run_cli(*command_args(command, ckpts.base, tuned, tmp_path), inputs=(tuned,))
        assert res.code == 0, (command, res.err)
        said = res.out + res.err
        assert f"1 keys only in base (not compared): {MODULES[0]}.weight" in said, command
        assert "2 keys only in tuned (not compared): extra.other.weight, extra.proj.weight" in said
    rows = json.loads((tmp_path / "r.json").read_text())["modules"]
    assert sorted(r["module"] for r in rows) == sorted(MODULES[1:])  # the rest, analysed
    skipped = json.loads((tmp_path / "r.json").read_text())["skipped"]["tuned"]
    assert skipped["only_in_base"] == [f"{MODULES[0]}.weight"]
    assert skipped["only_in_tuned"] == ["extra.other.weight", "extra.proj.weight"]


def test_no_common_module_at_all_is_refused(ckpts, run_cli, tmp_path) -> None:
    tuned = tmp_path / "other.safetensors"
    save_file({"encoder.dense.weight": torch.randn(3, 3)}, tuned)
    for command in ("compare", "figures", "report", "diagnose"):
        res = run_cli(*command_args(command, ckpts.base, tuned, tmp_path), inputs=(tuned,))
        assert_refused(res, str(tuned), "no adapted 2-D weights")


def _multilora(path: Path, tensors: dict, meta: dict[str, str]) -> Path:
    save_file(tensors, path, metadata=meta)
    return path


def _meta(**config: object) -> dict[str, str]:
    base = json.loads(MultiLoRAFileConfig(r=R, n=3, lora_alpha=4.0).to_json())
    return file_metadata(MultiLoRAFileConfig(r=R, n=3, lora_alpha=4.0)) | {
        "config": json.dumps({**base, **config})
    }


M0 = MODULES[0]
ML_CASES: dict[str, tuple[dict, dict[str, str], tuple[str, ...]]] = {
    "config-n-disagrees": (multilora_tensors(), _meta(n=4), (f"[{M0}]", "n = 4")),
    "n-differs-between-A-and-B": (
        {**multilora_tensors(), f"{M0}.multilora_A": torch.randn(2, R, IN)},
        _meta(),
        (f"[{M0}]", "(2, 2, 6)"),
    ),
    "config-r-disagrees": (multilora_tensors(), _meta(r=3), (f"[{M0}]", "r = 3")),
    "scaling-wrong-shape": (
        {**multilora_tensors(), f"{M0}.multilora_scaling": torch.randn(3)},
        _meta(),
        (f"[{M0}]", "scaling"),
    ),
    "B-missing": (
        {k: v for k, v in multilora_tensors().items() if k != f"{M0}.multilora_B"},
        _meta(),
        (f"[{M0}]", "multilora_B"),
    ),
    "config-not-json": (multilora_tensors(), _meta() | {"config": "{r: 2"}, ("[config]", "JSON")),
    "config-deeply-nested": (
        multilora_tensors(),
        _meta() | {"config": "[" * 50_000 + "]" * 50_000},
        ("[config]",),
    ),
    "config-r-zero": (multilora_tensors(), _meta(r=0), ("[config.r]", "positive")),
    "config-alpha-missing": (multilora_tensors(), _meta(lora_alpha=None), ("[config.lora_alpha]",)),
    "unknown-format-version": (
        multilora_tensors(),
        _meta() | {"format_version": "99"},
        ("[format_version]", "99"),
    ),
    "factors-without-marker": (multilora_tensors(), {}, (f"{M0}.multilora_A", "format")),
}


@pytest.mark.parametrize("case", sorted(ML_CASES))
def test_inconsistent_multilora_is_refused_by_every_command(ckpts, run_cli, tmp_path, case) -> None:
    tensors, meta, needles = ML_CASES[case]
    ml = _multilora(tmp_path / "ml.safetensors", tensors, meta)
    _refused_by_every_command(run_cli, ckpts.base, ml, tmp_path, *needles)
