"""Harness: the fake Kubernetes API, a loopback "proxy" and a loopback "forbidden" target.

Each test runs its own event loop (``asyncio.run``), like ``tests/fakes``. Everything
listens on 127.0.0.1 only: the doctor never probes an outside address here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tornado.httpserver
import tornado.netutil
import tornado.web

from jupyter_claude_pods.doctor import DoctorOptions, Report, run_doctor
from jupyter_claude_pods.sandbox.kubernetes.backend import KubernetesBackend
from tests.fakes.kube_api import FakeKubeAPI

NAMESPACE = "claude-pods-sandboxes"
IMAGE = "localhost/claude-pods-sandbox:0.1.0"
PSA_LABELS = {
    f"pod-security.kubernetes.io/{mode}{suffix}": value
    for mode in ("enforce", "audit", "warn")
    for suffix, value in (("", "restricted"), ("-version", "v1.34"))
}


class _Health(tornado.web.RequestHandler):
    def get(self) -> None:
        self.finish({"status": "ok", "in_flight": 0})


@contextlib.asynccontextmanager
async def health_server() -> AsyncIterator[int]:
    """A stand-in for the key proxy: ``GET /healthz`` on a loopback port."""
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server = tornado.httpserver.HTTPServer(tornado.web.Application([(r"/healthz", _Health)]))
    server.add_sockets(sockets)
    try:
        yield sockets[0].getsockname()[1]
    finally:
        server.stop()
        await server.close_all_connections()


@contextlib.asynccontextmanager
async def tcp_listener() -> AsyncIterator[tuple[int, list[int]]]:
    """A loopback port that accepts connections; yields (port, connection count)."""
    accepted: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], accepted
    finally:
        server.close()
        await server.wait_closed()


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Env:
    api: FakeKubeAPI
    kubeconfig: Path
    proxy_port: int
    forbidden_port: int
    forbidden_hits: list[int]
    tmp_path: Path

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    def backend(self, **traits: Any) -> KubernetesBackend:
        settings: dict[str, Any] = {
            "kubeconfig": str(self.kubeconfig),
            "namespace": NAMESPACE,
            "image": IMAGE,
            "proxy_url": self.proxy_url,
            "request_timeout": 5.0,
            "start_timeout": 20.0,
            "api_retry_timeout": 3.0,
        }
        settings.update(traits)
        return KubernetesBackend(**settings)

    async def doctor(self, backend: KubernetesBackend | None = None, **options: Any) -> Report:
        options.setdefault("egress_wait", 1.0)
        options.setdefault("connect_timeout", 1.0)
        return await run_doctor(backend or self.backend(), DoctorOptions(**options))

    def doctor_pods(self) -> list[str]:
        return [key for key in self.api.pods if "claude-pods-doctor" in key]

    async def cli(self, *args: str, config: dict[str, Any] | None = None) -> tuple[int, str, str]:
        """Run ``python -m jupyter_claude_pods.doctor doctor ARGS`` with a Jupyter config dir."""
        config_dir = self.tmp_path / "jupyter-config"
        config_dir.mkdir(exist_ok=True)
        (config_dir / "jupyter_server_config.json").write_text(json.dumps(config or {}))
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CLAUDE_PODS_", "KUBE", "JUPYTER_CONFIG"))
        }
        env["JUPYTER_CONFIG_DIR"] = str(config_dir)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "jupyter_claude_pods.doctor",
            "doctor",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=str(self.tmp_path),
        )
        out, err = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()


Body = Callable[[Env], Awaitable[None]]


@pytest.fixture
def cluster(tmp_path: Path) -> Callable[..., None]:
    """``cluster(body, labels=..., **FakeKubeAPI kwargs)`` runs ``body(env)`` on a fresh loop.

    The sandbox namespace carries the restricted labels unless ``labels`` says otherwise;
    the node lists the sandbox image unless ``node_images`` says otherwise. After the
    body, no pod of the doctor may be left and no process may still run.
    """

    def run(body: Body, labels: dict[str, str] | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("node_images", [[IMAGE, "localhost/claude-pods-sandbox@sha256:0"]])
        kwargs.setdefault("kubernetes_service_env", True)

        async def main() -> None:
            api = FakeKubeAPI(workdir_base=tmp_path / "pods", **kwargs)
            await api.start()
            try:
                kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig", namespace=NAMESPACE)
                api.add_namespace(NAMESPACE, PSA_LABELS if labels is None else labels)
                async with health_server() as proxy_port, tcp_listener() as (port, hits):
                    env = Env(api, kubeconfig, proxy_port, port, hits, tmp_path)
                    await asyncio.wait_for(body(env), 90)
                    await api.wait_for(lambda a: not env.doctor_pods(), what="doctor pod gone")
            finally:
                await api.stop()
            assert api.live_processes() == 0

        asyncio.run(main())

    return run
