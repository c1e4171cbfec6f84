"""Finding and loading the cluster configuration; one set of API clients per backend.

Like KubeSpawner's ``clients.py``: in-cluster configuration first, then the
kubeconfig. Unlike it, the clients belong to the backend object (created on its
event loop in ``startup`` and closed in ``shutdown``) rather than a module cache.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, config

from .stream import ChannelWsApiClient

SERVICEACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def in_cluster() -> bool:
    """True inside a pod that has API credentials mounted."""
    return (
        bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and (SERVICEACCOUNT_DIR / "token").exists()
    )


def kubeconfig_paths(explicit: str = "") -> list[Path]:
    """The kubeconfig files that exist, in the order kubectl would read them."""
    raw = explicit or os.environ.get("KUBECONFIG", "") or "~/.kube/config"
    paths = [Path(p).expanduser() for p in raw.split(os.pathsep) if p]
    return [p for p in paths if p.is_file()]


def cluster_configured(kubeconfig: str = "") -> bool:
    """Whether ``backend = "auto"`` should choose Kubernetes."""
    return bool(kubeconfig_paths(kubeconfig)) or in_cluster()


@dataclass
class KubeClients:
    """The clients a backend needs, sharing one configuration."""

    api: client.ApiClient
    #: CoreV1Api clients, typed Any: we call them with ``_preload_content=False`` and
    #: get raw responses, not the models their annotations promise.
    core: Any
    ws: ChannelWsApiClient
    ws_core: Any
    #: The namespace of the kubeconfig context or of the server's own pod.
    default_namespace: str

    async def close(self) -> None:
        await self.api.close()
        await self.ws.close()


def _context_namespace(paths: list[Path], context: str) -> str:
    """Namespace of the chosen (or current) kubeconfig context; blocking file read."""
    contexts, current = config.list_kube_config_contexts(config_file=str(paths[0]))
    chosen = (
        next((c for c in contexts if c.get("name") == context), current) if context else current
    )
    return str(((chosen or {}).get("context") or {}).get("namespace") or "default")


async def load_clients(kubeconfig: str = "", context: str = "") -> KubeClients:
    """Load in-cluster config or the kubeconfig and build the clients.

    The file reads run in a worker thread once at start-up, so the event loop never
    waits on the filesystem.
    """
    configuration = client.Configuration()
    if in_cluster() and not kubeconfig:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        namespace = await asyncio.to_thread(
            lambda: (SERVICEACCOUNT_DIR / "namespace").read_text().strip()
        )
    else:
        paths = kubeconfig_paths(kubeconfig)
        if not paths:
            raise FileNotFoundError("no kubeconfig found (set KUBECONFIG or run in a cluster)")
        await config.load_kube_config(
            config_file=str(paths[0]),
            context=context or None,
            client_configuration=configuration,
        )
        namespace = await asyncio.to_thread(_context_namespace, paths, context)
    api = client.ApiClient(configuration=configuration)
    # Every open terminal holds one exec WebSocket for its whole life; the client's
    # default pool (100 connections) would make terminal 101 wait for a free slot and
    # time out. The pool size is read when a client is built, so this leaves the REST
    # client's own limit as it was.
    configuration.connection_pool_maxsize = 0  # aiohttp: no limit
    ws = ChannelWsApiClient(configuration=configuration, heartbeat=30)
    return KubeClients(
        api=api,
        core=client.CoreV1Api(api_client=api),
        ws=ws,
        ws_core=client.CoreV1Api(api_client=ws),
        default_namespace=namespace,
    )


#: An API answer read with ``_preload_content=False``: (HTTP status, JSON object body).
Response = tuple[int, dict[str, Any]]


async def read_response(call: Callable[[], Awaitable[Any]]) -> Response:
    """Make one API request and read its status and JSON body (``{}`` if not an object).

    Why raw responses: the generated models raise on error statuses and drop the API's
    ``Status`` message, which is what a person needs to see (403 reasons, 409 names).
    """
    resp = await call()
    async with resp:
        status = int(resp.status)
        try:
            body = await resp.json(content_type=None)
        except ValueError:
            body = {}
    return status, body if isinstance(body, dict) else {}
