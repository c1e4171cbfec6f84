"""Loading the cluster configuration the way the server does, and plain API requests.

The doctor uses the server's own loader (:func:`..sandbox.kubernetes.client.load_clients`)
so that what it checks is what the Jupyter server will use: in-cluster credentials
inside a pod, else the configured kubeconfig, ``$KUBECONFIG`` or ``~/.kube/config``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes_asyncio import config as kube_config

from ..sandbox.kubernetes.client import (
    KubeClients,
    Response,
    in_cluster,
    kubeconfig_paths,
    load_clients,
    read_response,
)
from .model import Check

KUBECONFIG_HINT = (
    "Point the doctor at a kubeconfig (--kubeconfig FILE, $KUBECONFIG or ~/.kube/config; "
    "on a k3s server copy /etc/rancher/k3s/k3s.yaml and replace 127.0.0.1 by the server's "
    "address), or run it in the Jupyter pod, which has in-cluster credentials."
)


class Unreachable(Exception):
    """The API server did not answer (connection refused, TLS error, timeout)."""


@dataclass
class Cluster:
    """The loaded clients and what the checks need to know about them."""

    clients: KubeClients
    #: The sandbox namespace: configured, else the context's or the pod's own.
    namespace: str
    #: The API server URL.
    server: str
    request_timeout: float

    @property
    def core(self) -> Any:
        return self.clients.core

    async def request(self, call: Callable[[], Awaitable[Any]]) -> Response:
        """One request made with ``_preload_content=False``: (status, JSON body).

        No retries: a doctor reports what it sees, at once.
        """
        try:
            return await asyncio.wait_for(read_response(call), self.request_timeout)
        except (asyncio.TimeoutError, aiohttp.ClientError, OSError) as e:
            raise Unreachable(_describe(e)) from None

    async def close(self) -> None:
        await self.clients.close()


def _describe(e: BaseException) -> str:
    if isinstance(e, asyncio.TimeoutError):
        return "no answer within the request timeout"
    text = str(e).strip()
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _context_name(path: str, context: str) -> str:
    """The kubeconfig context that will be used (blocking file read)."""
    if context:
        return context
    _, current = kube_config.list_kube_config_contexts(config_file=path)
    return str((current or {}).get("name") or "")


async def load_cluster(
    kubeconfig: str, context: str, namespace: str, request_timeout: float
) -> tuple[Cluster | None, Check]:
    """Load the configuration; the ``config`` check says where it came from."""
    try:
        clients = await load_clients(kubeconfig, context)
    except Exception as e:  # noqa: BLE001 - any loader failure is the answer of this check
        return None, Check(
            "config",
            "fail",
            f"the Kubernetes configuration could not be loaded: {_describe(e)}",
            KUBECONFIG_HINT,
        )
    server = str(clients.api.configuration.host)
    if in_cluster() and not kubeconfig:
        source = "in-cluster service account"
        data: dict[str, Any] = {"source": "in-cluster"}
    else:
        path = str(kubeconfig_paths(kubeconfig)[0])
        try:
            name = await asyncio.to_thread(_context_name, path, context)
        except Exception:  # noqa: BLE001 - only used for the message
            name = context
        source = f"kubeconfig {path}" + (f" (context {name})" if name else "")
        data = {"source": "kubeconfig", "kubeconfig": path, "context": name}
    chosen = namespace or clients.default_namespace
    data.update(server=server, namespace=chosen)
    where = "configured" if namespace else "from the context"
    cluster = Cluster(clients, chosen, server, request_timeout)
    return cluster, Check(
        "config",
        "ok",
        f"{source}; API server {server}; sandbox namespace {chosen} ({where})",
        data=data,
    )
