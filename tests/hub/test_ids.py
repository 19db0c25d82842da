"""Hub id syntax: what is an id, what is a path, what is refused (text only, no network)."""

from __future__ import annotations

import pytest

from spectra.hub import HubId, HubIdError, parse_hub_id
from spectra.hub.ids import parse_named_base


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("org/name", HubId("org/name", None, None, explicit=False)),
        ("hf://org/name", HubId("org/name")),
        ("org/name@v1.0", HubId("org/name", "v1.0", None, explicit=False)),
        ("hf://org/name@0123abc/sub/folder", HubId("org/name", "0123abc", "sub/folder")),
        ("hf://org/name@refs/pr/3/adapter", HubId("org/name", "refs/pr/3", "adapter")),
        ("hf://org/name@feature%2Fx", HubId("org/name", "feature/x")),
        ("hf://org/name/runs/r2/", HubId("org/name", None, "runs/r2")),
        ("hf://gpt2", HubId("gpt2")),
        ("hf:/org/name@v1/sub", HubId("org/name", "v1", "sub")),  # str(Path("hf://..."))
        ("hf://gpt2@main", HubId("gpt2", "main")),
        ("out/run-1/checkpoint-500", HubId("out/run-1", None, "checkpoint-500", explicit=False)),
    ],
)
def test_ids(text: str, want: HubId) -> None:
    assert parse_hub_id(text) == want


@pytest.mark.parametrize(
    "text",
    [
        "lora.safetensors",
        "gpt2",
        "./org/name",
        "/abs/org/name",
        "~/x/y",
        "a/b@",
        "-org/name",
        "C:\\x\\y",
    ],
)
def test_what_can_only_be_a_path(text: str) -> None:
    assert parse_hub_id(text) is None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("hf://org//name", "not a Hub id"),
        ("hf://org/name@", "not a Hub id"),
        ("hf://org/na--me", "not a valid repo name part"),
        ("hf://org./name", "not a valid repo name part"),
        ("hf://org/name/../x", "without '.', '..' or empty parts"),
        ("hf://org/name@a b", "empty or holds spaces"),
        ("hf://datasets/org/name", "datasets repositories hold no model weights"),
        ("hf://" + "a" * 60 + "/" + "b" * 40, "longer than 96"),
    ],
)
def test_malformed_explicit_ids(text: str, says: str) -> None:
    with pytest.raises(HubIdError) as info:
        parse_hub_id(text)
    assert says in str(info.value) and str(info.value).startswith(text + ": ")


def test_written_out_and_labels() -> None:
    for text in (
        "hf://org/name",
        "hf://org/name@v1/sub",
        "hf://org/name@refs/pr/3",
        "hf://x@a%2Fb",
    ):
        hub_id = parse_hub_id(text)
        assert hub_id is not None and str(hub_id) == text and parse_hub_id(str(hub_id)) == hub_id
    assert parse_hub_id("org/name@v1").label == "name"
    assert parse_hub_id("hf://org/name/runs/r2").label == "r2"
    assert parse_hub_id("hf://org/name/loras/run3.safetensors").label == "run3"


def test_base_named_in_an_adapter_config() -> None:
    assert parse_named_base("gpt2", None) == HubId("gpt2")
    assert parse_named_base("meta-llama/Llama-2-7b-hf", "abc") == HubId(
        "meta-llama/Llama-2-7b-hf", "abc"
    )
    assert parse_named_base("/home/me/models/llama", None) is None
    assert parse_named_base("org/name/sub", None) is None
