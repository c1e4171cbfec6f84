"""The same terminal flow against a real Kubernetes cluster.

Runs only when ``CLAUDE_PODS_TEST_KUBECONFIG`` names a kubeconfig (we never probe a
cluster on our own: the address in a developer's default kubeconfig may be anywhere).
Optional: ``CLAUDE_PODS_TEST_NAMESPACE`` (default ``default``) and
``CLAUDE_PODS_TEST_IMAGE`` (default ``debian:bookworm-slim``; must have bash).
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from kubernetes_asyncio import client, config

from tests.terminals.client import TermClient

KUBECONFIG = os.environ.get("CLAUDE_PODS_TEST_KUBECONFIG", "")
NAMESPACE = os.environ.get("CLAUDE_PODS_TEST_NAMESPACE", "default")
IMAGE = os.environ.get("CLAUDE_PODS_TEST_IMAGE", "debian:bookworm-slim")

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(not KUBECONFIG, reason="set CLAUDE_PODS_TEST_KUBECONFIG to run"),
]


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {
        "ServerApp": {
            "jpserver_extensions": {"jupyter_claude_pods": True, "jupyter_server_terminals": True}
        },
        "SandboxTerminalManager": {"backend": "kubernetes"},
        "KubernetesBackend": {
            "kubeconfig": KUBECONFIG,
            "namespace": NAMESPACE,
            "image": IMAGE,
            "command": ["bash", "--norc", "--noprofile", "-i"],
            "extra_env": {"PS1": "$ "},
            "instance": "claude-pods-cluster-test",
            "start_timeout": 180.0,
        },
    }


async def our_pods() -> list[str]:
    await config.load_kube_config(config_file=KUBECONFIG)
    async with client.ApiClient() as api:
        pods = await client.CoreV1Api(api).list_namespaced_pod(
            NAMESPACE, label_selector="app.kubernetes.io/instance=claude-pods-cluster-test"
        )
    return [p.metadata.name for p in pods.items if not p.metadata.deletion_timestamp]


async def test_terminal_on_a_real_pod(jp_fetch: Any, jp_ws_fetch: Any, jp_serverapp: Any) -> None:
    resp = await jp_fetch("api", "terminals", method="POST", body="{}")
    name = json.loads(resp.body)["name"]
    term = TermClient(await jp_ws_fetch("terminals", "websocket", name))
    await term.expect("$ ", timeout=200)
    assert len(await our_pods()) == 1
    term.set_size(33, 101)
    term.stdin("stty size; id -u\r")
    await term.expect("33 101", timeout=30)
    await term.expect("1000", timeout=30)
    await jp_fetch("api", "terminals", name, method="DELETE")
    await jp_serverapp.web_app.settings["terminal_manager"].wait_reaped()
    assert await our_pods() == []
