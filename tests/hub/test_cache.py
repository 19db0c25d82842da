"""Offline (HF_HUB_OFFLINE=1): resolution from a cache laid out as huggingface_hub lays it out
(``models--org--name/{blobs,refs,snapshots}``), built here; no server runs."""

from __future__ import annotations

import pytest
import torch

from spectra.hub import HubUnavailableError, locate, needed_tensors, resolve
from spectra.io import open_tensors
from spectra.loaders import open_checkpoint
from tests.hub.conftest import (
    ADAPTED_KEYS,
    ADAPTER_ID,
    BASE_ID,
    INDEX,
    HubEnv,
    Repos,
    build_cache,
)


def test_adapter_from_the_cache(hub_env: HubEnv, repos: Repos) -> None:
    folder = build_cache(hub_env.cache, ADAPTER_ID, repos.repos[ADAPTER_ID])
    found = locate(ADAPTER_ID)
    commit = repos.repos[ADAPTER_ID].refs["main"]
    assert found.path == folder / "snapshots" / commit
    assert found.hub is not None and not found.hub.online and found.hub.downloaded == ()
    # the loaders read the cached adapter exactly as the folder PEFT saved
    cached = open_checkpoint(found.path)
    saved = open_checkpoint(repos.adapter_dir)
    assert [m.module for m in cached.modules()] == [m.module for m in saved.modules()]
    for m in cached.modules():
        a, b = cached.update(m.module), saved.update(m.module)
        assert torch.equal(a.left, b.left) and torch.equal(a.right, b.right)


def test_partly_cached_base_serves_the_needed_shards(hub_env: HubEnv, repos: Repos) -> None:
    weight_map, shards = repos.weight_map(), repos.needed_shards()
    build_cache(hub_env.cache, ADAPTER_ID, repos.repos[ADAPTER_ID])
    build_cache(hub_env.cache, BASE_ID, repos.repos[BASE_ID], only={INDEX, "config.json", *shards})
    adapter = resolve(ADAPTER_ID)
    base = locate(BASE_ID, role="base", needed_tensors=needed_tensors([adapter]))
    assert base.hub is not None and base.hub.partial is not None
    source = open_tensors(base.path)
    assert set(source.keys()) == {k for k, s in weight_map.items() if s in shards}
    full = open_tensors(repos.base_dir)
    for k in ADAPTED_KEYS:
        assert torch.equal(source.get(k), full.get(k))
    # every shard is more than the cache holds, and offline nothing can be fetched
    with pytest.raises(HubUnavailableError) as info:
        resolve(BASE_ID, role="base")
    message = str(info.value)
    assert "not in the local cache" in message and "HF_HUB_OFFLINE is set" in message
    assert "\n" not in message


def test_tag_and_commit_revisions_offline(hub_env: HubEnv, repos: Repos) -> None:
    repo = repos.repos[BASE_ID]
    build_cache(hub_env.cache, BASE_ID, repo)
    by_tag = locate(f"{BASE_ID}@v0", role="base")
    by_commit = locate(f"hf://{BASE_ID}@{repo.refs['v0']}", role="base")
    assert by_tag.path == by_commit.path
    assert (by_tag.path / "model.safetensors").is_file()
    assert not (by_tag.path / INDEX).exists()  # v0 is the single-file revision


@pytest.mark.parametrize("arg", [ADAPTER_ID, f"hf://{ADAPTER_ID}@v9"])
def test_offline_without_the_revision_in_the_cache(hub_env: HubEnv, repos: Repos, arg: str) -> None:
    if "@" in arg:
        build_cache(hub_env.cache, ADAPTER_ID, repos.repos[ADAPTER_ID])
    with pytest.raises(HubUnavailableError) as info:
        resolve(arg)
    message = str(info.value)
    assert "is not in the local cache" in message and "HF_HUB_OFFLINE is set" in message
    assert str(hub_env.cache) in message and "\n" not in message
