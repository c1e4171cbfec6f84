"""Pods go away on cull, on server stop and after a crash; caps hold under concurrency."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from kubernetes_asyncio import client, config
from tornado.httpclient import HTTPClientError

from jupyter_claude_pods.sandbox.kubernetes.objects import make_pod
from jupyter_claude_pods.sandbox.kubernetes.options import PodOptions
from jupyter_claude_pods.sandbox.spec import SandboxSpec

from .conftest import NAMESPACE


def pods_in_namespace(api: Any) -> list[str]:
    return [key for key in api.pods if key.startswith(f"{NAMESPACE}/")]


@pytest.mark.parametrize(
    "extra_config",
    [{"SandboxTerminalManager": {"cull_inactive_timeout": 1, "cull_interval": 1}}],
)
async def test_idle_terminal_is_culled_and_its_pod_deleted(
    jp_fetch: Any, fake_kube: Any, open_terminal: Any
) -> None:
    _name, term = await open_terminal()
    await term.expect("$ ")
    assert len(pods_in_namespace(fake_kube)) == 1
    await fake_kube.wait_for(lambda api: not pods_in_namespace(api), timeout=20)
    assert json.loads((await jp_fetch("api", "terminals")).body) == []


async def test_server_stop_deletes_every_pod(
    jp_serverapp: Any, fake_kube: Any, open_terminal: Any
) -> None:
    terms = [await open_terminal() for _ in range(3)]
    for _, term in terms:
        await term.expect("$ ")
    assert len(pods_in_namespace(fake_kube)) == 3
    await jp_serverapp.extension_manager.stop_all_extensions()
    assert pods_in_namespace(fake_kube) == []


async def test_leftover_pods_of_this_server_are_swept_at_start(
    fake_kube: Any, manager: Any
) -> None:
    # Pods a crashed run of this server left behind, created through the real client.
    await config.load_kube_config(config_file=fake_kube.kubeconfig_path)
    async with client.ApiClient() as api:
        core = client.CoreV1Api(api)
        for i, instance in enumerate(["test-server", "test-server", "another-server"]):
            spec = SandboxSpec(session_id=f"old{i}", user="alice", terminal=str(i))
            options = PodOptions(namespace=NAMESPACE, image="img:1", instance=instance)
            await core.create_namespaced_pod(NAMESPACE, make_pod(spec, options))
    assert len(pods_in_namespace(fake_kube)) == 3
    await manager.ensure_started()
    remaining = [fake_kube.pods[key] for key in pods_in_namespace(fake_kube)]
    assert [p["metadata"]["labels"]["app.kubernetes.io/instance"] for p in remaining] == [
        "another-server"
    ]


@pytest.mark.parametrize(
    "extra_config",
    [{"SandboxTerminalManager": {"max_sandboxes_per_user": 2, "max_sandboxes": 3}}],
)
async def test_caps_hold_under_concurrent_creates(jp_fetch: Any, fake_kube: Any) -> None:
    async def create() -> int:
        try:
            resp = await jp_fetch("api", "terminals", method="POST", body="{}")
            return int(resp.code)
        except HTTPClientError as e:
            assert e.code == 429
            assert e.response is not None
            message = json.loads(e.response.body)["message"]
            assert "limit is 2" in message
            return e.code

    codes = await asyncio.gather(*(create() for _ in range(10)))
    assert sorted(codes) == [200, 200] + [429] * 8
    await fake_kube.wait_for(lambda api: len(pods_in_namespace(api)) == 2)
    listed = json.loads((await jp_fetch("api", "terminals")).body)
    assert len(listed) == 2


async def test_orphans_appearing_later_are_reconciled(
    fake_kube: Any, manager: Any, open_terminal: Any
) -> None:
    _name, term = await open_terminal()
    await term.expect("$ ")
    # E.g. a create the API server completed after the terminal that asked was closed.
    await config.load_kube_config(config_file=fake_kube.kubeconfig_path)
    async with client.ApiClient() as api:
        core = client.CoreV1Api(api)
        for i, instance in enumerate(["test-server", "another-server"]):
            spec = SandboxSpec(session_id=f"late{i}", user="alice", terminal="9")
            options = PodOptions(namespace=NAMESPACE, image="img:1", instance=instance)
            await core.create_namespaced_pod(NAMESPACE, make_pod(spec, options))

    def instances(api: Any) -> list[str]:
        return sorted(
            api.pods[key]["metadata"]["labels"]["app.kubernetes.io/instance"]
            for key in pods_in_namespace(api)
        )

    await fake_kube.wait_for(lambda api: instances(api) == ["another-server", "test-server"])
    term.stdin("echo still-here\r")
    await term.expect("still-here")
