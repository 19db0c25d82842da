"""Without huggingface_hub (the optional ``hub`` extra): spectra starts, local paths work, a
Hub id is refused with the install command."""

from __future__ import annotations

import subprocess
import sys

import pytest

from spectra.hub import HubExtraMissingError, resolve


@pytest.fixture
def no_huggingface_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import now raises ImportError


def test_a_hub_id_asks_for_the_extra(no_huggingface_hub: None) -> None:
    with pytest.raises(HubExtraMissingError) as info:
        resolve("hf://org/name")
    assert str(info.value).endswith("pip install 'spectra-ft[hub]'")


def test_a_bare_id_says_both_readings(no_huggingface_hub: None) -> None:
    with pytest.raises(HubExtraMissingError) as info:
        resolve("org/name")
    assert str(info.value) == (
        "org/name: no such local file or directory; read as the Hub id hf://org/name it needs "
        "huggingface_hub: pip install 'spectra-ft[hub]'"
    )


def test_spectra_starts_without_it() -> None:
    code = (
        "import sys; sys.modules['huggingface_hub'] = None; "
        "import spectra.hub, spectra_cli.app; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
