"""Every failure reaches the person as a clear line in the terminal, plus a log line,
and leaves no pod behind."""

from __future__ import annotations

import json
from typing import Any

import pytest

from .conftest import NAMESPACE


def pods_in_namespace(api: Any) -> list[str]:
    return [key for key in api.pods if key.startswith(f"{NAMESPACE}/")]


async def assert_fails_cleanly(
    jp_fetch: Any, fake_kube: Any, term: Any, name: str, expected: str, server_log: Any
) -> None:
    out = await term.expect("open a new one to retry")
    assert expected in out, out
    assert any(expected in line for line in server_log.lines), server_log.lines[-5:]
    model = json.loads((await jp_fetch("api", "terminals", name)).body)
    assert model["claude_pods"]["state"] == "failed"
    assert expected in model["claude_pods"]["reason"]
    await fake_kube.wait_for(lambda api: not pods_in_namespace(api))


async def test_rbac_forbidden(
    jp_fetch: Any, fake_kube: Any, open_terminal: Any, server_log: Any
) -> None:
    fake_kube.faults.forbid("create", "pods")
    name, term = await open_terminal()
    await assert_fails_cleanly(
        jp_fetch, fake_kube, term, name, "not allowed to create pods", server_log
    )


async def test_invalid_spec(
    jp_fetch: Any, fake_kube: Any, open_terminal: Any, server_log: Any
) -> None:
    fake_kube.faults.fail_next_create_invalid("spec.containers[0].image: Required value")
    name, term = await open_terminal()
    await assert_fails_cleanly(
        jp_fetch, fake_kube, term, name, "rejected the sandbox pod spec", server_log
    )
    assert "spec.containers[0].image" in term.output


async def test_quota_exceeded(
    jp_fetch: Any, fake_kube: Any, open_terminal: Any, server_log: Any
) -> None:
    fake_kube.faults.exceed_quota()
    name, term = await open_terminal()
    await assert_fails_cleanly(jp_fetch, fake_kube, term, name, "no quota left", server_log)


async def test_image_pull_failure(
    jp_fetch: Any, fake_kube: Any, open_terminal: Any, server_log: Any
) -> None:
    fake_kube.faults.image_pull_error("claude-pods-sandbox")
    name, term = await open_terminal()
    await assert_fails_cleanly(
        jp_fetch, fake_kube, term, name, "could not pull the sandbox image", server_log
    )


@pytest.mark.parametrize("extra_config", [{"KubernetesBackend": {"start_timeout": 0.5}}])
async def test_start_timeout(
    jp_fetch: Any, fake_kube: Any, open_terminal: Any, server_log: Any
) -> None:
    fake_kube.faults.never_ready()
    name, term = await open_terminal()
    await assert_fails_cleanly(
        jp_fetch, fake_kube, term, name, "did not become ready within 0.5s", server_log
    )


async def test_pod_oomkilled_mid_session(
    jp_fetch: Any, fake_kube: Any, open_terminal: Any, server_log: Any
) -> None:
    name, term = await open_terminal()
    await term.expect("$ ")
    (pod_key,) = pods_in_namespace(fake_kube)
    fake_kube.kill_pod(pod_key.split("/", 1)[1], reason="OOMKilled", exit_code=137)
    await assert_fails_cleanly(jp_fetch, fake_kube, term, name, "ran out of memory", server_log)


@pytest.mark.parametrize("extra_config", [{"KubernetesBackend": {"api_retry_timeout": 1.0}}])
async def test_api_server_unreachable(
    jp_fetch: Any, fake_kube: Any, open_terminal: Any, server_log: Any, manager: Any
) -> None:
    await manager.ensure_started()
    fake_kube.go_down()
    _name, term = await open_terminal()
    out = await term.expect("open a new one to retry")
    assert "unreachable" in out, out
    assert any("unreachable" in line for line in server_log.lines)
    await fake_kube.come_back()


async def test_transient_api_errors_are_retried(
    jp_fetch: Any, fake_kube: Any, open_terminal: Any
) -> None:
    fake_kube.faults.fail_next(2, status=503, verbs=("create",))
    _name, term = await open_terminal()
    await term.expect("$ ")
    assert len(pods_in_namespace(fake_kube)) == 1


async def test_exec_forbidden(
    jp_fetch: Any, fake_kube: Any, open_terminal: Any, server_log: Any
) -> None:
    fake_kube.faults.forbid("create", "pods/exec")
    name, term = await open_terminal()
    await assert_fails_cleanly(
        jp_fetch, fake_kube, term, name, "not allowed to exec into pods", server_log
    )


async def test_watch_expiry_is_survived(fake_kube: Any, open_terminal: Any) -> None:
    _name, first = await open_terminal()
    await first.expect("$ ")
    fake_kube.expire_watches()  # 410 Expired: the reflector must relist and watch again
    _name, second = await open_terminal()
    await second.expect("$ ")
    second.stdin("echo second-ok\r")
    await second.expect("second-ok")


async def test_create_conflict_adopts_our_own_pod_and_refuses_a_stranger(
    fake_kube: Any, manager: Any
) -> None:
    from kubernetes_asyncio import client, config

    from jupyter_claude_pods.sandbox.base import SandboxError
    from jupyter_claude_pods.sandbox.kubernetes.objects import make_pod
    from jupyter_claude_pods.sandbox.spec import SandboxSpec

    await manager.ensure_started()
    backend = manager.sandbox_backend
    mine = SandboxSpec(session_id="adopt1", user="alice", terminal="7", rows=24, cols=80)
    stranger = SandboxSpec(session_id="adopt2", user="alice", terminal="8", rows=24, cols=80)
    pods = [make_pod(mine, backend._options), make_pod(stranger, backend._options)]
    pods[1]["metadata"]["labels"]["claude-pods.jupyter.org/session"] = "someone-else"
    # As if an earlier attempt of ours had created them (else they are reconciled away).
    backend._owned.update(p["metadata"]["name"] for p in pods)
    await config.load_kube_config(config_file=fake_kube.kubeconfig_path)
    async with client.ApiClient() as api:
        for pod in pods:
            await client.CoreV1Api(api).create_namespaced_pod(NAMESPACE, pod)

    lines: list[str] = []
    sandbox = await backend.start(mine, lines.append)  # 409 → same session label → adopt
    assert sandbox.name == pods[0]["metadata"]["name"]
    with pytest.raises(SandboxError, match="a different pod named"):
        await backend.start(stranger, lines.append)
    await backend.stop(sandbox)
    # Ours is gone; the stranger's pod was left alone.
    await fake_kube.wait_for(
        lambda api: pods_in_namespace(api) == [f"{NAMESPACE}/{pods[1]['metadata']['name']}"]
    )
