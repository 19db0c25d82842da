"""A command's inputs resolved together: only the base shards the checkpoints need, and the
base an adapter config names when none is given."""

from __future__ import annotations

from spectra.hub import resolve_inputs
from spectra.hub.resolve import record_sources
from tests.hub.conftest import (
    ADAPTER_ID,
    BASE_ID,
    INDEX,
    FakeHub,
    HubEnv,
    Repos,
    build_cache,
)


def test_the_named_base_is_fetched_in_the_shards_needed(online: FakeHub, repos: Repos) -> None:
    lines: list[str] = []
    got = resolve_inputs(None, [ADAPTER_ID], want_base=True, report=lines.append)
    assert got.base is not None and got.base.hub is not None
    commit = repos.repos[BASE_ID].refs["main"]
    assert got.base.hub.commit == commit and got.base_named_by == f"hf://{ADAPTER_ID}"
    assert (
        f"base: hf://{BASE_ID} (commit {commit[:12]}), named in the adapter config of "
        f"hf://{ADAPTER_ID}"
    ) in lines
    fetched = {d.removeprefix(BASE_ID + "/") for d in online.downloads() if d.startswith(BASE_ID)}
    assert fetched == {INDEX, "config.json", *repos.needed_shards()}
    assert got.labels() == ["tiny-lora"]
    result = got.record({"base": {"path": str(got.base.path)}, "inputs": [{"path": "x"}]})
    assert result["base"]["path"] == f"hf://{BASE_ID}"
    assert result["base"]["hub"]["commit"] == commit and result["base"]["hub"]["partial"]
    assert result["inputs"][0]["hub"]["files"] == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    # the same record from the paths alone (what the command line does after the analysis)
    again = record_sources(
        {"base": {"path": str(got.base.path)}, "inputs": [{"path": str(got.paths[0])}]}
    )
    assert again["base"]["hub"] == result["base"]["hub"]
    assert again["inputs"][0]["path"] == f"hf://{ADAPTER_ID}"


def test_no_base_wanted_no_base_fetched(online: FakeHub) -> None:
    got = resolve_inputs(None, [ADAPTER_ID], want_base=False)
    assert got.base is None
    assert not any(d.startswith(BASE_ID) for d in online.downloads())


def test_an_unavailable_named_base_is_a_note(hub_env: HubEnv, repos: Repos) -> None:
    build_cache(hub_env.cache, ADAPTER_ID, repos.repos[ADAPTER_ID])  # the base is not cached
    lines: list[str] = []
    got = resolve_inputs(None, [ADAPTER_ID], want_base=True, report=lines.append)
    assert got.base is None
    assert len(lines) == 1 and lines[0].startswith(
        f"note: no base metrics: the base named by hf://{ADAPTER_ID} is not available"
    )
    assert "pass --base" in lines[0]


def test_a_given_base_gets_only_the_needed_shards(online: FakeHub, repos: Repos) -> None:
    got = resolve_inputs(f"hf://{BASE_ID}", [ADAPTER_ID], want_base=True)
    assert got.base is not None and got.base_named_by is None
    fetched = {d.removeprefix(BASE_ID + "/") for d in online.downloads() if d.startswith(BASE_ID)}
    assert fetched == {INDEX, "config.json", *repos.needed_shards()}
