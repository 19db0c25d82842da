"""Resolution through the real huggingface_hub against a local server (HF_ENDPOINT): which
files are fetched, what the cache then holds, and one clear error per failure."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from spectra.hub import (
    HubIdError,
    HubNotFoundError,
    HubUnavailableError,
    locate,
    needed_tensors,
    resolve,
)
from spectra.io import open_tensors
from spectra.loaders import open_checkpoint
from tests.hub.conftest import (
    ADAPTED_LAYER,
    ADAPTER_ID,
    BASE_ID,
    EMPTY_ID,
    INDEX,
    NESTED_ID,
    TARGETS,
    FakeHub,
    HubEnv,
    Repos,
    set_hub_env,
)


def test_adapter_fetches_its_config_and_weights_only(online: FakeHub, repos: Repos) -> None:
    path = resolve(ADAPTER_ID)
    assert sorted(online.downloads()) == [
        f"{ADAPTER_ID}/adapter_config.json",
        f"{ADAPTER_ID}/adapter_model.safetensors",
    ]  # not the README PEFT wrote beside them
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (path / name).read_bytes() == (repos.adapter_dir / name).read_bytes()


def test_base_fetches_the_index_and_only_the_shards_the_adapter_needs(
    online: FakeHub, repos: Repos, hub_env: HubEnv
) -> None:
    adapter = resolve(ADAPTER_ID)
    needed = needed_tensors([adapter])
    base = locate(BASE_ID, role="base", needed_tensors=needed)
    shards = repos.needed_shards()
    all_shards = set(repos.weight_map().values())
    assert 0 < len(shards) < len(all_shards)
    fetched = {d.removeprefix(BASE_ID + "/") for d in online.downloads() if d.startswith(BASE_ID)}
    assert fetched == {INDEX, "config.json", *shards}
    assert base.hub is not None and base.hub.partial == f"{len(shards)} of {len(all_shards)} shards"
    assert set(base.hub.downloaded) == fetched
    # the partial base is a base the loaders read: the adapter aligns to it, weights are exact
    reader = open_checkpoint(adapter, base=open_tensors(base.path))
    modules = sorted(m.module for m in reader.modules())
    assert modules == [f"encoder.layer.{ADAPTED_LAYER}.attention.self.{t}" for t in TARGETS]
    got, want = open_tensors(base.path), open_tensors(repos.base_dir)
    for m in modules:
        assert torch.equal(got.get(m + ".weight"), want.get(m + ".weight"))
    # the cache was written where HF_HUB_CACHE points, and nothing else was
    assert (hub_env.cache / "models--test-org--tiny-base" / "snapshots").is_dir()


def test_a_second_resolution_reads_the_cache(online: FakeHub) -> None:
    first = resolve(ADAPTER_ID)
    online.requests.clear()
    again = locate(ADAPTER_ID)
    assert again.path == first and again.hub is not None and again.hub.downloaded == ()
    assert online.downloads() == []


def test_no_shard_list_means_every_shard(online: FakeHub, repos: Repos) -> None:
    path = resolve(BASE_ID, role="base")
    assert (path / INDEX).read_bytes() == (repos.base_dir / INDEX).read_bytes()
    assert {p.name for p in path.glob("*.safetensors")} == {
        p.name for p in repos.base_dir.glob("*.safetensors")
    }


def test_revision_and_subfolder(online: FakeHub, repos: Repos) -> None:
    old = locate(f"{BASE_ID}@v0", role="base")
    assert old.hub is not None and old.hub.commit == repos.repos[BASE_ID].refs["v0"]
    assert (old.path / "model.safetensors").is_file()
    nested = locate(f"hf://{NESTED_ID}/runs/r2")
    assert nested.path.name == "r2" and nested.label == "r2"
    assert (nested.path / "adapter_config.json").read_bytes() == (
        repos.adapter_dir / "adapter_config.json"
    ).read_bytes()
    one_file = resolve(f"hf://{NESTED_ID}/runs/r2/adapter_model.safetensors")
    assert one_file.name == "adapter_model.safetensors"
    assert (one_file.parent / "adapter_config.json").is_file()  # fetched beside it


def test_token_from_hf_token_is_sent(online: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_test_token_1234")
    resolve(ADAPTER_ID)
    assert {auth for _, _, auth in online.requests} == {"Bearer hf_test_token_1234"}


def test_a_base_given_an_adapter_is_refused(online: FakeHub) -> None:
    with pytest.raises(HubNotFoundError, match="is an adapter"):
        resolve(ADAPTER_ID, role="base")


@pytest.mark.parametrize(
    ("arg", "error", "says"),
    [
        ("hf://test-org/missing", HubNotFoundError, "no model repo 'test-org/missing'"),
        (f"{ADAPTER_ID}@v9", HubNotFoundError, "no revision 'v9'"),
        (f"hf://{EMPTY_ID}", HubNotFoundError, "holds no weights"),
        (
            f"hf://{NESTED_ID}",
            HubNotFoundError,
            "adapters are in subfolders: name one, e.g. hf://test-org/adapters/runs/r2",
        ),
        (f"hf://{ADAPTER_ID}/nothing/here", HubNotFoundError, "no file or folder 'nothing/here'"),
        ("hf://test-org//x", HubIdError, "not a Hub id"),
        ("hf://-org/x", HubIdError, "not a valid repo name part"),
    ],
)
def test_bad_input_is_one_line(online: FakeHub, arg: str, error: type, says: str) -> None:
    with pytest.raises(error) as info:
        resolve(arg)
    message = str(info.value)
    assert says in message and "\n" not in message


def test_gated_and_server_errors(online: FakeHub) -> None:
    online.gated.add(ADAPTER_ID)
    with pytest.raises(HubNotFoundError, match="the repo is gated: accept its terms"):
        resolve(ADAPTER_ID)
    online.gated.clear()
    online.broken.add(ADAPTER_ID)
    with pytest.raises(HubUnavailableError) as info:
        resolve(ADAPTER_ID)
    message = str(info.value)
    assert "could not be reached (HfHubHTTPError: Server error '500" in message
    assert "is not in the local cache" in message and "\n" not in message


def test_a_bare_id_that_fails_says_both_readings(online: FakeHub) -> None:
    with pytest.raises(HubNotFoundError) as info:
        resolve("runs/lora-7")
    message = str(info.value)
    assert message.startswith(
        "runs/lora-7: no such local file or directory, and read as the Hub id hf://runs/lora-7:"
    )
    assert "no model repo 'runs/lora-7'" in message and "\n" not in message


def test_a_local_path_wins(
    online: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "test-org" / "tiny-lora").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert resolve(ADAPTER_ID) == Path(ADAPTER_ID)
    assert online.requests == []


def test_no_network_and_nothing_cached(fake_hub: FakeHub, online: FakeHub) -> None:
    fake_hub.stop()
    with pytest.raises(HubUnavailableError) as info:
        resolve(ADAPTER_ID)
    message = str(info.value)
    assert "could not be reached" in message and "not in the local cache" in message
    assert "\n" not in message


def test_no_network_reads_what_is_cached(
    fake_hub: FakeHub, online: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = resolve(ADAPTER_ID)
    fake_hub.stop()
    assert resolve(ADAPTER_ID) == first
    set_hub_env(monkeypatch, HF_HUB_OFFLINE="1")
    assert resolve(ADAPTER_ID) == first
