"""Golden guard: the same real inputs give the same result bytes.

A fixed, seeded set of real checkpoints (a tiny BERT base and its full fine-tune as
safetensors, a real PEFT LoRA adapter on query/value, a MultiLoRA file written by spectra's own
writer) is analysed with base metrics and similarity; ``dumps_result`` must equal the stored
``tests/data/golden_result.json`` byte for byte, and ``spectra diagnose --json`` must equal
``tests/data/golden_diagnose.json``. Refactors must not move a single byte; a deliberate change
of the JSON regenerates the files in one step (``SPECTRA_REGEN_GOLDEN=1 pytest
tests/test_golden_result.py``) and says why below.

History of deliberate changes:
- generated from commit 256f6c0.
- diagnose --json: one result shape (the result's fields plus ``diagnosis``, instead of
  ``{"diagnosis", "result"}``), readable by ``figures/report --from-json`` (issue 12, item 2);
  ``settings.similarity`` false for diagnose's single checkpoint (no pair to compare).
- summary means over the changed modules only (finite, ΔW ≠ 0) with their counts and the
  unchanged / non-finite modules listed; math.fsum in the means (last-bit changes); φ and
  energy shares clipped to [0, 1] (1.0000000026 → 1.0) (issue 12, item 4). Regenerated with
  the other sessions' new fields of the same moment: settings.intruders*, unrelated_threshold,
  metrics.relative_norm / relative_spectral_norm, summary.*relative* (issue 12, items 1, 5).
- metrics.k90 / k95 / k99 and utilisation, summary.mean_k90 / k95 / k99 / mean_utilisation
  (issue 13, item 1); nothing else moved.
- modules[].stack ("" here: BERT has one stack) (issue 12, item 3); modules in natural
  order (the same order for these two-layer inputs).
- metrics.relative_spectral_norm changed when its σ1(W0) routine changed, first in the last
  bit, then by ≤ 1.1e-7 relative (an iterative σ1, issue 12, item 5); nothing else moved.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from spectra.analysis import AnalysisOptions, analyze
from spectra.io.result_schema import check_result
from spectra.results import dumps_result, load_result
from tests.models import tiny_bert

DATA = Path(__file__).parent / "data"
GOLDEN_RESULT = DATA / "golden_result.json"
GOLDEN_DIAGNOSE = DATA / "golden_diagnose.json"
REGEN = os.environ.get("SPECTRA_REGEN_GOLDEN") == "1"
TARGETS = ("query", "value")
SIZES = {  # pinned here, not taken from tests.models: the golden bytes depend on them
    "vocab_size": 40,
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 24,
    "max_position_embeddings": 8,
}


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return tiny_bert(pooling=False, **SIZES)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def _write_inputs(root: Path) -> None:
    """base.safetensors, full.safetensors, lora/ (PEFT), multilora.safetensors in ``root``."""
    from peft import LoraConfig, get_peft_model

    from spectra.multilora.format import MultiLoRAFileConfig, write_multilora

    base = _state(_model())
    save_file(base, str(root / "base.safetensors"))
    g = torch.Generator().manual_seed(1)
    full = {k: v + 0.02 * torch.randn(v.shape, generator=g) for k, v in base.items()}
    save_file(full, str(root / "full.safetensors"))

    peft_model = get_peft_model(
        _model(), LoraConfig(r=4, lora_alpha=8, target_modules=list(TARGETS))
    )
    with torch.no_grad():
        for name, p in sorted(peft_model.named_parameters()):
            if "lora_" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    peft_model.save_pretrained(str(root / "lora"))

    hidden, n, r = SIZES["hidden_size"], 2, 2
    tensors = {}
    for layer in range(SIZES["num_hidden_layers"]):
        for t in TARGETS:
            m = f"encoder.layer.{layer}.attention.self.{t}"
            tensors[m + ".multilora_A"] = torch.randn(n, r, hidden, generator=g)
            tensors[m + ".multilora_B"] = torch.randn(n, hidden, r, generator=g)
            tensors[m + ".multilora_scaling"] = torch.randn(n, hidden, generator=g)
    write_multilora(
        root / "multilora.safetensors",
        tensors,
        MultiLoRAFileConfig(r=r, n=n, lora_alpha=4.0, target_modules=TARGETS),
    )


@pytest.fixture
def golden_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The inputs, with the working directory set to them: paths in the result are relative,
    so the bytes do not depend on where the test runs."""
    _write_inputs(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _compare(text: str, golden: Path) -> None:
    if REGEN:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text, encoding="utf-8")
    want = golden.read_text(encoding="utf-8")
    if text != want:  # the first differing line, not a 3000-line diff
        got_lines, want_lines = text.splitlines(), want.splitlines()
        for i, (a, b) in enumerate(zip(got_lines, want_lines, strict=False)):
            if a != b:
                pytest.fail(f"{golden.name} line {i + 1}: got {a!r}, stored {b!r}")
        pytest.fail(f"{golden.name}: {len(got_lines)} lines, stored {len(want_lines)}")


def test_analyze_result_is_byte_identical(golden_dir: Path) -> None:
    result = analyze(
        "base.safetensors",
        ["full.safetensors", "lora", "multilora.safetensors"],
        options=AnalysisOptions(top_k=4),
    )
    assert result["settings"]["against_base"] and result["similarity"]
    check_result(result, "analyze()", strict=True)  # every field written is declared
    _compare(dumps_result(result), GOLDEN_RESULT)


def test_diagnose_json_is_byte_identical(golden_dir: Path, run_cli) -> None:  # noqa: F811
    res = run_cli("diagnose", "lora", "--base", "base.safetensors", "--json", "diag.json")
    assert res.code == 0, res.err
    _compare((golden_dir / "diag.json").read_text(encoding="utf-8"), GOLDEN_DIAGNOSE)
    check_result(load_result(golden_dir / "diag.json"), "diag.json", strict=True)


def test_diagnose_json_draws_figures_and_a_report(golden_dir: Path, run_cli) -> None:  # noqa: F811
    """One result shape: what ``diagnose --json`` writes is what ``--from-json`` reads."""
    res = run_cli("diagnose", "lora", "--json", "diag.json")
    assert res.code == 0, res.err
    for command in ("figures", "report"):
        res = run_cli(command, "--from-json", "diag.json", "-o", command)
        assert res.code == 0, res.err
        assert any((golden_dir / command).iterdir())
