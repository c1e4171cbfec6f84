"""Which backend a server uses: configuration, ``auto`` detection and the env override."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jupyter_claude_pods.sandbox.kubernetes.backend import KubernetesBackend
from jupyter_claude_pods.terminals import SandboxTerminalManager


@pytest.fixture
def no_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("CLAUDE_PODS_BACKEND", raising=False)
    return tmp_path


def backend_of(**traits: Any) -> Any:
    return SandboxTerminalManager(shell_command=[], extra_env={}, **traits).sandbox_backend


def test_auto_without_a_cluster_is_not_kubernetes(no_cluster: Path) -> None:
    assert not isinstance(backend_of(), KubernetesBackend)  # local (tests/local)


def test_auto_with_a_kubeconfig_is_kubernetes(
    no_cluster: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = no_cluster / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    assert isinstance(backend_of(), KubernetesBackend)


def test_auto_with_the_default_kubeconfig_is_kubernetes(no_cluster: Path) -> None:
    (no_cluster / ".kube").mkdir()
    (no_cluster / ".kube" / "config").write_text("apiVersion: v1\nkind: Config\n")
    assert isinstance(backend_of(), KubernetesBackend)


def test_env_overrides_configuration(no_cluster: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAUDE_PODS_BACKEND", "kubernetes")
    assert isinstance(backend_of(backend="local"), KubernetesBackend)
    monkeypatch.setenv("CLAUDE_PODS_BACKEND", "local")
    assert not isinstance(backend_of(backend="kubernetes"), KubernetesBackend)


def test_bad_env_value_falls_back_to_configuration(
    no_cluster: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAUDE_PODS_BACKEND", "docker")
    assert isinstance(backend_of(backend="kubernetes"), KubernetesBackend)


@pytest.mark.parametrize(
    "extra_config",
    [
        {
            "SandboxTerminalManager": {"backend": "local"},
            "LocalBackend": {"bwrap_path": "/nonexistent/bwrap"},
        }
    ],
)
async def test_terminal_explains_a_missing_backend(open_terminal: Any, fake_kube: Any) -> None:
    _name, term = await open_terminal()
    out = await term.expect("open a new one to retry")
    assert "bubblewrap is not installed" in out
    assert fake_kube.created_bodies == []
