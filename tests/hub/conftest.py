"""Hub fixtures: real repos (a tiny BERT saved in shards by transformers, a PEFT LoRA adapter
saved by PEFT), served by a local HTTP server through the endpoints huggingface_hub calls, or
laid out in a cache the way huggingface_hub lays it out; the environment huggingface_hub reads
(``HF_ENDPOINT``, ``HF_HUB_CACHE``, ``HF_HOME``, ``HF_HUB_OFFLINE``) set per test."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import torch

from tests.models import tiny_bert

BASE_ID = "test-org/tiny-base"
ADAPTER_ID = "test-org/tiny-lora"
NESTED_ID = "test-org/adapters"  # an adapter in a subfolder, and a README at the root
EMPTY_ID = "test-org/no-weights"
RUN_ID = "test-org/tiny-run"  # a Trainer run: checkpoint-5/ and checkpoint-10/ adapters
TARGETS = ("query", "value")
ADAPTED_LAYER = 1  # the adapter touches this layer only: its shards are the needed ones
ADAPTED_KEYS = tuple(f"encoder.layer.{ADAPTED_LAYER}.attention.self.{t}.weight" for t in TARGETS)
INDEX = "model.safetensors.index.json"  # the base's index, as transformers names it


@dataclass
class Repo:
    """Files of one model repo (path → bytes) per revision; ``refs`` maps branch/tag names
    to commits."""

    commits: dict[str, dict[str, bytes]]
    refs: dict[str, str]

    def files(self, revision: str) -> tuple[str, dict[str, bytes]] | None:
        commit = self.refs.get(revision, revision)
        return (commit, self.commits[commit]) if commit in self.commits else None


@dataclass(frozen=True)
class Repos:
    """The repos of the tests and the local folders they were saved from."""

    repos: dict[str, Repo]
    base_dir: Path  # transformers save_pretrained(max_shard_size=...)
    adapter_dir: Path  # PEFT save_pretrained

    def weight_map(self) -> dict[str, str]:
        """The base's weight map (tensor → shard), read from the saved index by hand."""
        return json.loads((self.base_dir / INDEX).read_text())["weight_map"]

    def needed_shards(self) -> set[str]:
        """The base shards holding the adapted weights (:data:`ADAPTED_KEYS`)."""
        weight_map = self.weight_map()
        return {weight_map[k] for k in ADAPTED_KEYS}


def commit_of(files: dict[str, bytes], salt: str = "") -> str:
    h = hashlib.sha1(salt.encode())
    for name in sorted(files):
        h.update(name.encode() + b"\0" + files[name])
    return h.hexdigest()


def _folder(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def _repo(files: dict[str, bytes], **tags: dict[str, bytes]) -> Repo:
    main = commit_of(files)
    commits = {main: files}
    refs = {"main": main}
    for tag, tagged in tags.items():
        commits[commit_of(tagged, tag)] = tagged
        refs[tag] = commit_of(tagged, tag)
    return Repo(commits, refs)


@pytest.fixture(scope="session")
def repos(tmp_path_factory: pytest.TempPathFactory) -> Repos:
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("hub_repos")
    torch.manual_seed(0)
    model = tiny_bert(hidden_size=32, intermediate_size=64, num_hidden_layers=3, pooling=False)
    model.save_pretrained(root / "base", max_shard_size="20KB")
    model.save_pretrained(root / "v0")  # one file: an older revision of the base, tagged v0
    model.name_or_path = BASE_ID  # as from_pretrained(BASE_ID) sets it; PEFT saves it
    config = LoraConfig(
        r=2, lora_alpha=4, target_modules=list(TARGETS), layers_to_transform=[ADAPTED_LAYER]
    )
    peft_model = get_peft_model(model, config)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    peft_model.save_pretrained(root / "adapter")
    with torch.no_grad():  # the run's later checkpoint: B moved on
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    peft_model.save_pretrained(root / "adapter_later")
    adapter_config = json.loads((root / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == BASE_ID  # PEFT kept the name

    base_files = {**_folder(root / "base"), "README.md": b"# tiny base\n"}
    old = {**_folder(root / "v0"), "README.md": b"# v0\n"}
    adapter_files = _folder(root / "adapter")
    nested = {f"runs/r2/{k}": v for k, v in adapter_files.items()} | {"README.md": b"# runs\n"}
    run = {f"checkpoint-5/{k}": v for k, v in adapter_files.items()} | {
        f"checkpoint-10/{k}": v for k, v in _folder(root / "adapter_later").items()
    }
    return Repos(
        repos={
            BASE_ID: _repo(base_files, v0=old),
            ADAPTER_ID: _repo(adapter_files),
            NESTED_ID: _repo(nested),
            RUN_ID: _repo({**run, "README.md": b"# a run\n"}),
            EMPTY_ID: _repo({"README.md": b"# nothing\n", "config.json": b"{}"}),
        },
        base_dir=root / "base",
        adapter_dir=root / "adapter",
    )


# --- the server --------------------------------------------------------------------------------

_API = re.compile(r"/api/models/(?P<repo>.+)/revision/(?P<rev>[^/]+)")
_RESOLVE = re.compile(r"/(?P<repo>.+?)/resolve/(?P<rev>[^/]+)/(?P<file>.+)")


@dataclass
class FakeHub:
    """A local server answering as the Hub does for the calls huggingface_hub makes to read
    a model repo: ``GET /api/models/{repo}/revision/{rev}`` (the listing) and ``HEAD``/``GET
    /{repo}/resolve/{rev}/{file}`` (metadata headers, then the bytes)."""

    repos: dict[str, Repo]
    url: str = ""
    gated: set[str] = field(default_factory=set)  # answered 403 GatedRepo
    broken: set[str] = field(default_factory=set)  # answered 500
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, path, auth
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def downloads(self) -> list[str]:
        """The repo files fetched with GET, as ``repo/file``, in order."""
        out = []
        for method, path, _ in self.requests:
            m = _RESOLVE.fullmatch(path)
            if method == "GET" and m:
                out.append(f"{m['repo']}/{unquote(m['file'])}")
        return out

    def start(self) -> None:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

            def _answer(self, *, body: bool) -> None:
                path = urlsplit(self.path).path
                hub.requests.append((self.command, path, self.headers.get("authorization")))
                status, headers, data = hub.respond(path)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join(timeout=10)
            self._server = None

    def respond(self, path: str) -> tuple[int, dict[str, str], bytes]:
        m = _API.fullmatch(path) or _RESOLVE.fullmatch(path)
        if m is None:
            return _error(404, "RepoNotFound")
        name = unquote(m["repo"])
        if name in self.gated:
            return _error(403, "GatedRepo")
        if name in self.broken:
            return 500, {}, b"{}"
        repo = self.repos.get(name)
        if repo is None:
            return _error(404, "RepoNotFound")
        found = repo.files(unquote(m["rev"]))
        if found is None:
            return _error(404, "RevisionNotFound")
        commit, files = found
        if m.re is _API:
            info = {
                "id": name,
                "sha": commit,
                "siblings": [{"rfilename": f} for f in sorted(files)],
            }
            return 200, {"Content-Type": "application/json"}, json.dumps(info).encode()
        data = files.get(unquote(m["file"]))
        if data is None:
            return _error(404, "EntryNotFound", {"X-Repo-Commit": commit})
        etag = hashlib.sha256(data).hexdigest()
        return 200, {"X-Repo-Commit": commit, "ETag": f'"{etag}"'}, data


def _error(status: int, code: str, extra: dict[str, str] | None = None):
    return status, {"X-Error-Code": code, **(extra or {})}, b"{}"


@pytest.fixture
def fake_hub(repos: Repos) -> Iterator[FakeHub]:
    hub = FakeHub(repos.repos)
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()


# --- the environment huggingface_hub reads ----------------------------------------------------


@dataclass(frozen=True)
class HubEnv:
    cache: Path
    home: Path


def set_hub_env(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    """Set huggingface_hub's environment variables and re-read them, as a fresh process would
    (the library reads them into ``huggingface_hub.constants`` at import)."""
    import huggingface_hub.constants

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    importlib.reload(huggingface_hub.constants)


@pytest.fixture
def hub_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubEnv]:
    """An empty cache under this test's folder, offline until a test says otherwise."""
    import huggingface_hub.constants

    env = HubEnv(cache=tmp_path / "hf" / "hub", home=tmp_path / "hf")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    set_hub_env(
        monkeypatch,
        HF_HOME=str(env.home),
        HF_HUB_CACHE=str(env.cache),
        HF_HUB_OFFLINE="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
    )
    yield env
    monkeypatch.undo()
    importlib.reload(huggingface_hub.constants)


@pytest.fixture
def online(hub_env: HubEnv, fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    """The fake Hub as HF_ENDPOINT, network allowed."""
    set_hub_env(monkeypatch, HF_ENDPOINT=fake_hub.url, HF_HUB_OFFLINE="0")
    return fake_hub


# --- a cache built by hand, laid out as huggingface_hub lays it out ---------------------------


def build_cache(cache: Path, repo_id: str, repo: Repo, *, only: set[str] | None = None) -> Path:
    """``models--org--name/{blobs,refs,snapshots}``: blobs named by content hash, every
    snapshot file a relative symlink into blobs/, refs/<branch or tag> holding the commit.

    Args:
        only: Repo files to put in the cache (None: all of every revision).

    Returns:
        The repo's folder in the cache.
    """
    folder = cache / ("models--" + repo_id.replace("/", "--"))
    for commit, files in repo.commits.items():
        for name, data in files.items():
            if only is not None and name not in only:
                continue
            digest = hashlib.sha256(data).hexdigest()
            blob = folder / "blobs" / digest
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(data)
            link = folder / "snapshots" / commit / name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
    for ref, commit in repo.refs.items():
        (folder / "refs").mkdir(parents=True, exist_ok=True)
        (folder / "refs" / ref).write_text(commit)
    return folder
