"""Render every overlay once per session, and derive what the checks need from it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from .checks import Settings, jupyter_config, load_settings, sandbox_pod
from .kustomize import kustomize, overlay_names, prepare

OVERLAYS = overlay_names()
#: Overlays that put JupyterLab behind a TLS Ingress instead of NodePort 31000.
INGRESS_OVERLAYS = frozenset({"k3s-ingress"})


@dataclass
class Rendered:
    """One overlay: its objects, the server's settings from its ConfigMap, the sandbox pod."""

    name: str
    objs: list[dict[str, Any]]
    settings: Settings
    pod: dict[str, Any]

    @property
    def ingress(self) -> bool:
        return self.name in INGRESS_OVERLAYS


def write_kubeconfig(path: Path) -> Path:
    """A kubeconfig for a loopback port nothing listens on (building a pod needs no call)."""
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "c", "cluster": {"server": "https://127.0.0.1:9"}},
                ],
                "users": [{"name": "u", "user": {"token": "test-token-not-real"}}],
                "contexts": [
                    {
                        "name": "x",
                        "context": {"cluster": "c", "user": "u", "namespace": "from-kubeconfig"},
                    }
                ],
                "current-context": "x",
            }
        )
    )
    return path


@pytest.fixture(scope="session")
def manifests_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare(tmp_path_factory.mktemp("render") / "manifests")


@pytest.fixture(scope="session")
def rendered(
    manifests_copy: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Rendered]]:
    result: dict[str, Rendered] = {}
    with pytest.MonkeyPatch.context() as mp:
        # The configuration, not the test environment, must choose the backend.
        mp.delenv("CLAUDE_PODS_BACKEND", raising=False)
        for name in OVERLAYS:
            objs = kustomize(manifests_copy / "overlays" / name)
            work = tmp_path_factory.mktemp(f"pod-{name}")
            settings = load_settings(jupyter_config(objs, work / "root"))
            pod = sandbox_pod(settings.backend, write_kubeconfig(work / "kubeconfig"))
            result[name] = Rendered(name, objs, settings, pod)
        yield result


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest, rendered: dict[str, Rendered]) -> Rendered:
    return rendered[request.param]
