"""One shared list-then-watch of our pods, instead of polling per terminal.

Modelled on KubeSpawner's ``ResourceReflector``: LIST to get a consistent snapshot
and its ``resourceVersion``, then WATCH from there; restart the watch regularly
("don't trust a watch to yield every event"); on ``410 Expired`` relist at once; on
any other failure back off exponentially (capped) and relist. We never give up:
a Jupyter server outlives API-server blips, and terminals starting meanwhile just
wait for their start timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

Pod = dict[str, Any]
#: Called with the pod's latest state, or ``None`` when it was deleted.
Listener = Callable[[Pod | None], None]


class WatchExpired(Exception):
    """The API server no longer has history from our resourceVersion (HTTP 410)."""


class PodReflector:
    """A local cache of the pods matching a label selector, kept current by a watch."""

    def __init__(
        self,
        core: Any,
        namespace: str,
        label_selector: str,
        log: logging.Logger | logging.LoggerAdapter[Any],
        *,
        request_timeout: float = 10.0,
        watch_timeout: int = 300,
        max_backoff: float = 5.0,
    ) -> None:
        #: A ``CoreV1Api``, used with ``_preload_content=False`` for raw JSON (typed Any
        #: because the client's annotations describe the deserialised models).
        self.core = core
        self.namespace = namespace
        self.label_selector = label_selector
        self.log = log
        self.request_timeout = request_timeout
        self.watch_timeout = watch_timeout
        self.max_backoff = max_backoff
        #: Pods by name.
        self.pods: dict[str, Pod] = {}
        self._listeners: dict[str, list[Listener]] = {}
        #: Called with (name, pod or None) for every change of any pod.
        self.on_any_change: Callable[[str, Pod | None], None] | None = None
        self._task: asyncio.Task[None] | None = None
        self.first_load: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def start(self) -> None:
        """Start the list-then-watch loop in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="claude-pods-reflector")

    async def stop(self) -> None:
        """Stop watching."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def subscribe(self, name: str, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` on every change of pod ``name``; returns the unsubscriber."""
        self._listeners.setdefault(name, []).append(listener)

        def unsubscribe() -> None:
            listeners = self._listeners.get(name, [])
            if listener in listeners:
                listeners.remove(listener)
            if not listeners:
                self._listeners.pop(name, None)

        return unsubscribe

    def _update(self, name: str, pod: Pod | None) -> None:
        if pod is None:
            self.pods.pop(name, None)
        else:
            self.pods[name] = pod
        listeners: list[Callable[[Pod | None], None]] = list(self._listeners.get(name, []))
        if self.on_any_change is not None:
            listeners.append(lambda p: self.on_any_change(name, p))  # type: ignore[misc]
        for listener in listeners:
            try:
                listener(pod)
            except Exception:
                self.log.exception("pod listener for %s failed", name)

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                resource_version = await self._list()
                backoff = 0.1
                while True:
                    resource_version = await self._watch(resource_version)
            except asyncio.CancelledError:
                raise
            except WatchExpired:
                self.log.debug("pod watch expired; relisting")
            except Exception as e:  # noqa: BLE001 - any failure: back off and relist
                self.log.warning(
                    "watching sandbox pods failed (%s: %s); retrying in %.1fs",
                    type(e).__name__,
                    e,
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)

    async def _list(self) -> str:
        resp = await self.core.list_namespaced_pod(
            self.namespace,
            label_selector=self.label_selector,
            _preload_content=False,
            _request_timeout=self.request_timeout,
        )
        async with resp:
            if resp.status != 200:
                raise RuntimeError(f"LIST pods returned HTTP {resp.status}")
            body = await resp.json()
        seen = set()
        for pod in body.get("items") or []:
            name = pod["metadata"]["name"]
            seen.add(name)
            self._update(name, pod)
        for name in set(self.pods) - seen:  # deleted while we were not watching
            self._update(name, None)
        if not self.first_load.done():
            self.first_load.set_result(None)
        return str(body["metadata"]["resourceVersion"])

    async def _watch(self, resource_version: str) -> str:
        """Watch from ``resource_version`` until the server ends the watch; return the last."""
        resp = await self.core.list_namespaced_pod(
            self.namespace,
            label_selector=self.label_selector,
            watch=True,
            resource_version=resource_version,
            timeout_seconds=self.watch_timeout,
            allow_watch_bookmarks=True,
            _preload_content=False,
            _request_timeout=self.watch_timeout + self.request_timeout,
        )
        async with resp:
            if resp.status == 410:
                raise WatchExpired
            if resp.status != 200:
                raise RuntimeError(f"WATCH pods returned HTTP {resp.status}")
            while line := await resp.content.readline():
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise WatchExpired
                    raise RuntimeError(f"watch error: {obj.get('message')}")
                resource_version = str(
                    obj.get("metadata", {}).get("resourceVersion") or resource_version
                )
                if kind == "BOOKMARK":
                    continue
                name = obj["metadata"]["name"]
                self._update(name, None if kind == "DELETED" else obj)
        return resource_version
