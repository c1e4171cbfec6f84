"""Fixtures: a Jupyter server with the extension, reaching the fake Kubernetes API
through a kubeconfig, exactly as it would reach a real cluster."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.kube_api import FakeKubeAPI

from .client import TermClient

NAMESPACE = "sandboxes"
SECRET_KEY = "sk-ant-api03-REAL-KEY-must-never-leave-the-proxy-0123456789"
SHELL = ["bash", "--norc", "--noprofile", "-i"]


@pytest.fixture
def kube_options() -> dict[str, Any]:
    """Constructor arguments of the fake API (tests override this)."""
    return {}


@pytest.fixture
def fake_kube(io_loop: Any, tmp_path: Any, kube_options: dict[str, Any]) -> Iterator[FakeKubeAPI]:
    api = FakeKubeAPI(namespaces=("default", NAMESPACE), **kube_options)
    io_loop.run_sync(api.start)
    api.kubeconfig_path = str(tmp_path / "kubeconfig")
    api.write_kubeconfig(api.kubeconfig_path, namespace=NAMESPACE)
    yield api
    io_loop.run_sync(api.stop)


@pytest.fixture
def extra_config() -> dict[str, Any]:
    """Extra traitlets config, merged per class (tests override this)."""
    return {}


@pytest.fixture
def jp_server_config(fake_kube: FakeKubeAPI, extra_config: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {
        "ServerApp": {
            "jpserver_extensions": {"jupyter_claude_pods": True, "jupyter_server_terminals": True}
        },
        "SandboxTerminalManager": {"backend": "kubernetes"},
        "KubernetesBackend": {
            "kubeconfig": fake_kube.kubeconfig_path,
            "image": "registry.example/claude-pods-sandbox:0.1.0",
            "command": SHELL,
            "extra_env": {"PS1": "$ "},
            "instance": "test-server",
            "start_timeout": 20.0,
            "api_retry_timeout": 3.0,
            "request_timeout": 5.0,
        },
    }
    for section, values in extra_config.items():
        config.setdefault(section, {}).update(values)
    return config


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLAUDE_PODS_BACKEND", raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET_KEY)


@pytest.fixture
def open_terminal(jp_fetch: Any, jp_ws_fetch: Any) -> Any:
    """``await open_terminal()`` → (name, TermClient) of a new terminal."""

    async def _open(name: str | None = None, **headers: str) -> tuple[str, TermClient]:
        body = json.dumps({"name": name} if name else {})
        resp = await jp_fetch("api", "terminals", method="POST", body=body, headers=headers)
        model = json.loads(resp.body)
        return model["name"], await attach(jp_ws_fetch, model["name"], **headers)

    return _open


async def attach(jp_ws_fetch: Any, name: str, **headers: str) -> TermClient:
    ws = await jp_ws_fetch("terminals", "websocket", name, headers=headers or None)
    return TermClient(ws)


@pytest.fixture
def jp_serverapp(jp_serverapp: Any, fake_kube: FakeKubeAPI, io_loop: Any) -> Iterator[Any]:
    """The stock fixture, stopped while the fake API is still up (as a real stop would be)."""
    yield jp_serverapp
    io_loop.run_sync(jp_serverapp.extension_manager.stop_all_extensions)
