"""The Kubernetes backend: create a hardened pod, wait for it, exec into it, delete it.

Asynchronous end to end (kubernetes_asyncio on Jupyter's event loop): no thread per
terminal and no blocking call. One :class:`PodReflector` watches all our pods; each
starting terminal subscribes to its own pod instead of polling.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from traitlets import Dict, Enum, Float, Integer, List, TraitError, Unicode, default, validate

from ..base import ProgressCallback, Sandbox, SandboxBackend, SandboxError, SandboxStream
from ..spec import SandboxSpec, safe_slug, scrub_env
from . import objects, podstate
from .client import KubeClients, Response, load_clients, read_response
from .options import SESSION_LABEL, PodOptions
from .pss import ALLOWED_VOLUME_TYPES
from .reflector import Pod, PodReflector
from .stream import ChannelStream

#: Volume sources that may hold the courses: what the "restricted" Pod Security
#: Standard allows, minus what cannot hold a directory tree of files (emptyDir,
#: downwardAPI) and Secrets (nothing secret belongs in a sandbox).
COURSES_VOLUME_TYPES = ALLOWED_VOLUME_TYPES - {"secret", "emptyDir", "downwardAPI"}


class KubernetesBackend(SandboxBackend):
    """Each sandbox is a pod in ``namespace``; its terminal is a TTY exec (or attach)."""

    kind = "kubernetes"

    kubeconfig = Unicode(
        "",
        config=True,
        help="Path of the kubeconfig to use; empty = in-cluster config, else $KUBECONFIG or ~/.kube/config.",
    )
    context = Unicode("", config=True, help="kubeconfig context to use; empty = the current one.")
    namespace = Unicode(
        "",
        config=True,
        help="""Namespace for sandbox pods. Empty = the kubeconfig context's namespace, or the
        namespace of the Jupyter server's own pod when running in a cluster.""",
    )
    image = Unicode(
        "localhost/claude-pods-sandbox:0.1.0", config=True, help="Container image of the sandbox."
    )
    image_pull_policy = Enum(
        ["Always", "IfNotPresent", "Never"],
        "IfNotPresent",
        config=True,
        help="imagePullPolicy of the sandbox container (k3s with side-loaded images: Never).",
    )
    connect_mode = Enum(
        ["exec", "attach"],
        "exec",
        config=True,
        help="""How the terminal reaches the sandbox program. ``exec``: the container idles and
        the program is exec'd with a TTY (output from its very first byte is seen). ``attach``:
        the program is the container's main process and the terminal attaches to it (a lost
        stream can re-attach to the same process).""",
    )
    idle_command = List(
        Unicode(),
        default_value=["sleep", "infinity"],
        config=True,
        help="The container's main process in ``exec`` mode.",
    )
    cpu_request = Unicode("250m", allow_none=True, config=True, help="CPU request of a sandbox.")
    cpu_limit = Unicode("2", allow_none=True, config=True, help="CPU limit of a sandbox.")
    memory_request = Unicode("512Mi", allow_none=True, config=True, help="Memory request.")
    memory_limit = Unicode(
        "2Gi", allow_none=True, config=True, help="Memory limit (OOMKilled past it)."
    )
    ephemeral_storage_request = Unicode(
        "256Mi", allow_none=True, config=True, help="ephemeral-storage request."
    )
    ephemeral_storage_limit = Unicode(
        "2Gi", allow_none=True, config=True, help="ephemeral-storage limit (evicted past it)."
    )
    extra_resource_limits = Dict(
        value_trait=Unicode(),
        default_value={},
        config=True,
        help="""Extended resources each sandbox gets, as limits (Kubernetes sets the equal
        request), e.g. ``{"nvidia.com/gpu": "1"}`` with the NVIDIA device plugin. Only
        sandboxes get them, unlike a LimitRange default, which also hits other pods.""",
    )
    home_size_limit = Unicode("1Gi", config=True, help="sizeLimit of the home emptyDir.")
    tmp_size_limit = Unicode("512Mi", config=True, help="sizeLimit of the /tmp emptyDir.")
    home_dir = Unicode("/home/claude", config=True, help="Home directory inside the sandbox.")
    working_dir = Unicode("", config=True, help="Working directory of the sandbox program.")
    active_deadline_seconds = Integer(
        8 * 3600,
        allow_none=True,
        config=True,
        help="Hard maximum lifetime of a sandbox pod (activeDeadlineSeconds); None = unlimited.",
    )
    start_timeout = Float(
        300.0,
        config=True,
        help="Seconds a sandbox may take from creation to ready (image pulls count) before failing.",
    )
    request_timeout = Float(10.0, config=True, help="Timeout of one Kubernetes API request.")
    api_retry_timeout = Float(
        30.0,
        config=True,
        help="How long to keep retrying an API call that fails with 5xx or a connection error.",
    )
    delete_grace_period = Integer(
        1, config=True, help="gracePeriodSeconds when deleting a sandbox pod."
    )
    node_selector = Dict(
        value_trait=Unicode(), default_value={}, config=True, help="nodeSelector of sandbox pods."
    )
    tolerations = List(Dict(), default_value=[], config=True, help="Tolerations of sandbox pods.")
    runtime_class_name = Unicode(
        None, allow_none=True, config=True, help="runtimeClassName (e.g. gvisor) of sandbox pods."
    )
    extra_labels = Dict(
        value_trait=Unicode(), default_value={}, config=True, help="Extra labels on sandbox pods."
    )
    extra_annotations = Dict(
        value_trait=Unicode(),
        default_value={},
        config=True,
        help="Extra annotations on sandbox pods.",
    )
    run_as_user = Integer(1000, config=True, help="runAsUser of the sandbox (never 0).")
    run_as_group = Integer(1000, config=True, help="runAsGroup of the sandbox.")
    fs_group = Integer(1000, config=True, help="fsGroup of the sandbox.")
    proxy_url = Unicode(
        "",
        config=True,
        help="URL of the key proxy, given to sandboxes as ANTHROPIC_BASE_URL; empty = not set.",
    )
    instance = Unicode(
        config=True,
        help="""Identifies this Jupyter server among others using the same namespace. Pods carry
        it as ``app.kubernetes.io/instance``; at start-up, pods with our instance left over
        from a crash are deleted. Default: the JupyterHub user and server name, else the
        host name.""",
    )
    server_pod_name = Unicode(
        config=True,
        help="""Name of the pod the Jupyter server runs in (default: $CLAUDE_PODS_SERVER_POD_NAME,
        set through the downward API). When it is in the sandbox namespace, sandboxes get an
        ownerReference to it, so deleting the server's pod garbage-collects them.""",
    )
    server_pod_uid = Unicode(
        config=True, help="UID of the server's own pod (default: $CLAUDE_PODS_SERVER_POD_UID)."
    )
    server_pod_namespace = Unicode(
        config=True,
        help="Namespace of the server's own pod (default: $CLAUDE_PODS_SERVER_POD_NAMESPACE).",
    )

    @default("instance")
    def _default_instance(self) -> str:
        user = os.environ.get("JUPYTERHUB_USER")
        if user:
            server = os.environ.get("JUPYTERHUB_SERVER_NAME", "")
            return safe_slug(f"hub-{user}-{server}".rstrip("-"), 63)
        return safe_slug(f"{socket.gethostname() or 'jupyter'}-{getpass.getuser()}", 63)

    @default("server_pod_name")
    def _default_server_pod_name(self) -> str:
        return os.environ.get("CLAUDE_PODS_SERVER_POD_NAME", "")

    @default("server_pod_uid")
    def _default_server_pod_uid(self) -> str:
        return os.environ.get("CLAUDE_PODS_SERVER_POD_UID", "")

    @default("server_pod_namespace")
    def _default_server_pod_namespace(self) -> str:
        return os.environ.get("CLAUDE_PODS_SERVER_POD_NAMESPACE", "")

    courses_volume = Dict(
        default_value={},
        config=True,
        help="""Volume source holding the courses directory (the same content as
        ``CoursesConfig.courses_dir`` on the server), for example
        ``{"persistentVolumeClaim": {"claimName": "claude-pods-courses", "readOnly": true}}``.
        A course terminal mounts only its course's material from it (``subPath``),
        read-only at /course. Empty: course terminals fail with a message saying so.
        Allowed sources: """
        + ", ".join(sorted(COURSES_VOLUME_TYPES))
        + ".",
    )

    @validate("courses_volume")
    def _check_courses_volume(self, proposal: Any) -> dict[str, Any]:
        value: dict[str, Any] = proposal["value"]
        if not value:
            return value
        kinds = [k for k in value if k != "name"]
        if len(kinds) != 1 or kinds[0] not in COURSES_VOLUME_TYPES:
            raise TraitError(
                "KubernetesBackend.courses_volume must be one volume source of: "
                + ", ".join(sorted(COURSES_VOLUME_TYPES))
            )
        source = value[kinds[0]]
        if not isinstance(source, dict):
            raise TraitError("KubernetesBackend.courses_volume: the source must be a mapping")
        parts = source.get("sources") if kinds[0] == "projected" else None
        for part in parts or []:
            if not isinstance(part, dict) or set(part) - {"configMap"}:
                raise TraitError(
                    "KubernetesBackend.courses_volume: a projected volume may only hold configMaps"
                )
        return {kinds[0]: source}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._clients: KubeClients | None = None
        self._reflector: PodReflector | None = None
        self._config_error: str | None = None
        self._options: PodOptions | None = None
        #: Pods a session of this process is creating or using; any other pod of our
        #: instance is an orphan and gets deleted.
        self._owned: set[str] = set()
        self._deleting: dict[str, asyncio.Task[None]] = {}

    # ------------------------------------------------------------------ lifecycle

    async def _startup(self) -> None:
        try:
            self._clients = await load_clients(self.kubeconfig, self.context)
        except Exception as e:  # noqa: BLE001 - any reason: report it in every terminal
            self._config_error = f"the Kubernetes configuration could not be loaded: {e}"
            self.log.error("claude-pods: %s", self._config_error)
            return
        self._options = self.pod_options()
        self._reflector = PodReflector(
            self._clients.core,
            self._options.namespace,
            objects.instance_selector(self._options),
            self.log,
            request_timeout=self.request_timeout,
        )
        self._reflector.on_any_change = self._reconcile
        self._reflector.start()
        self.log.info(
            "claude-pods: sandboxes are pods in namespace %s (instance %s, image %s)",
            self._options.namespace,
            self._options.instance,
            self._options.image,
        )

    async def _shutdown(self) -> None:
        if self._deleting:
            await asyncio.gather(*self._deleting.values(), return_exceptions=True)
        if self._reflector is not None:
            await self._reflector.stop()
            self._reflector = None
        if self._clients is not None:
            await self._clients.close()
            self._clients = None

    def pod_options(self) -> PodOptions:
        """The traits as the builder's plain options."""
        assert self._clients is not None
        namespace = self.namespace or self._clients.default_namespace
        owner = None
        if self.server_pod_name and self.server_pod_uid and self.server_pod_namespace == namespace:
            owner = objects.make_owner_reference(self.server_pod_name, self.server_pod_uid)
        secret = os.environ.get("ANTHROPIC_API_KEY", "")
        return PodOptions(
            namespace=namespace,
            image=self.image,
            instance=self.instance,
            image_pull_policy=self.image_pull_policy,
            container_command=tuple(
                self.command if self.connect_mode == "attach" else self.idle_command
            ),
            tty=self.connect_mode == "attach",
            working_dir=self.working_dir or None,
            home_dir=self.home_dir,
            env=scrub_env(self.extra_env, (secret,)),
            proxy_url=self.proxy_url or None,
            cpu_request=self.cpu_request,
            cpu_limit=self.cpu_limit,
            memory_request=self.memory_request,
            memory_limit=self.memory_limit,
            ephemeral_storage_request=self.ephemeral_storage_request,
            ephemeral_storage_limit=self.ephemeral_storage_limit,
            extra_limits=dict(self.extra_resource_limits),
            home_size_limit=self.home_size_limit,
            tmp_size_limit=self.tmp_size_limit,
            active_deadline_seconds=self.active_deadline_seconds,
            node_selector=dict(self.node_selector),
            tolerations=tuple(self.tolerations),
            runtime_class_name=self.runtime_class_name,
            extra_labels=dict(self.extra_labels),
            extra_annotations=dict(self.extra_annotations),
            run_as_user=self.run_as_user,
            run_as_group=self.run_as_group,
            fs_group=self.fs_group,
            owner_reference=owner,
            courses_volume=dict(self.courses_volume) or None,
        )

    def _ready(self) -> tuple[KubeClients, PodReflector, PodOptions]:
        if self._config_error:
            raise SandboxError(self._config_error, reason="NoCluster")
        assert self._clients is not None
        assert self._reflector is not None
        assert self._options is not None
        return self._clients, self._reflector, self._options

    # ------------------------------------------------------------------ API calls

    async def _retrying(self, what: str, call: Callable[[], Awaitable[Any]]) -> Response:
        """Retry 5xx, 429, timeouts and connection errors with capped exponential backoff."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.api_retry_timeout
        delay = 0.1
        while True:
            try:
                status, body = await asyncio.wait_for(read_response(call), self.request_timeout)
                if status < 500 and status != 429:
                    return status, body
                error = f"HTTP {status} {body.get('message') or ''}".strip()
            except (asyncio.TimeoutError, aiohttp.ClientError, OSError) as e:
                error = f"{type(e).__name__} {e}".strip()
            if loop.time() + delay > deadline:
                raise SandboxError(
                    f"the Kubernetes API server is unreachable or failing ({what}: {error})",
                    reason="APIUnavailable",
                )
            self.log.warning("claude-pods: %s failed (%s); retrying in %.1fs", what, error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    # ------------------------------------------------------------------ sandboxes

    async def start(self, spec: SandboxSpec, progress: ProgressCallback) -> Sandbox:
        await self.startup()
        clients, reflector, options = self._ready()
        if spec.course is not None and options.courses_volume is None:
            raise SandboxError(
                f"course {spec.course.id} cannot be mounted: this server has no courses volume "
                "for sandbox pods (the administrator must set KubernetesBackend.courses_volume)",
                reason="NoCoursesVolume",
            )
        pod = objects.make_pod(spec, options)
        name = pod["metadata"]["name"]
        progress(f"creating sandbox pod {name} in namespace {options.namespace}…")
        sandbox = Sandbox(spec=spec, name=name)
        self._owned.add(name)
        try:
            created = await self._create(clients, options, pod)
        except SandboxError as e:
            self._owned.discard(name)
            if e.reason != "Conflict":  # never delete a pod we did not create
                await self.delete_pod(name)
            raise
        except BaseException:
            await self.stop(sandbox)
            raise
        try:
            await self._wait_ready(reflector, name, created, progress)
        except BaseException:
            await self.stop(sandbox)
            raise
        sandbox.extra["unsubscribe"] = reflector.subscribe(
            name, lambda p: self._watch_end(sandbox, p)
        )
        self._watch_end(sandbox, reflector.pods.get(name))
        return sandbox

    async def _create(self, clients: KubeClients, options: PodOptions, pod: Pod) -> Pod:
        name, ns = pod["metadata"]["name"], options.namespace
        status, body = await self._retrying(
            f"create pod {name}",
            lambda: clients.core.create_namespaced_pod(
                ns, pod, _preload_content=False, _request_timeout=self.request_timeout
            ),
        )
        if status in (200, 201, 202):
            return body
        message = str(body.get("message") or body.get("reason") or f"HTTP {status}")
        if status == 409:
            # Our own earlier attempt may have succeeded before its response was lost.
            status, existing = await self._retrying(
                f"read pod {name}",
                lambda: clients.core.read_namespaced_pod(
                    name, ns, _preload_content=False, _request_timeout=self.request_timeout
                ),
            )
            session = existing.get("metadata", {}).get("labels", {}).get(SESSION_LABEL)
            if status == 200 and session == pod["metadata"]["labels"][SESSION_LABEL]:
                self.log.info("claude-pods: adopting pod %s created by an earlier attempt", name)
                return existing
            raise SandboxError(f"a different pod named {name} already exists", reason="Conflict")
        if status == 403 and "exceeded quota" in message:
            raise SandboxError(
                f"the sandbox namespace {ns} has no quota left: {message}", reason="QuotaExceeded"
            )
        if status == 403:
            raise SandboxError(
                f"the Jupyter server is not allowed to create pods in namespace {ns} "
                f"(check its RBAC Role): {message}",
                reason="Forbidden",
            )
        if status == 422:
            raise SandboxError(
                f"the Kubernetes API rejected the sandbox pod spec: {message}", reason="Invalid"
            )
        raise SandboxError(f"creating the sandbox pod failed: {message}", reason="CreateFailed")

    async def _wait_ready(
        self, reflector: PodReflector, name: str, created: Pod, progress: ProgressCallback
    ) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        last: list[str] = [""]

        def on_change(pod: Pod | None) -> None:
            if done.done():
                return
            if pod is None:
                done.set_exception(
                    SandboxError("the sandbox pod was deleted while starting", reason="Deleted")
                )
                return
            line = podstate.progress(pod)
            if line and line != last[0]:
                last[0] = line
                progress(line)
            failed = podstate.failure(pod)
            if failed:
                done.set_exception(SandboxError(failed, reason="StartFailed"))
            elif podstate.is_ready(pod):
                done.set_result(None)

        unsubscribe = reflector.subscribe(name, on_change)
        try:
            on_change(reflector.pods.get(name) or created)
            await asyncio.wait_for(done, self.start_timeout)
        except asyncio.TimeoutError:
            raise SandboxError(
                f"the sandbox did not become ready within {self.start_timeout:g}s"
                f" (last state: {last[0] or 'not yet scheduled'})",
                reason="StartTimeout",
            ) from None
        finally:
            unsubscribe()

    def _watch_end(self, sandbox: Sandbox, pod: Pod | None) -> None:
        if sandbox.ended.done():
            return
        if pod is None:
            sandbox.ended.set_result("the sandbox pod was deleted")
            return
        failed = podstate.failure(pod)
        if failed:
            sandbox.ended.set_result(failed)

    async def connect(self, sandbox: Sandbox) -> SandboxStream:
        clients, _, options = self._ready()
        command = list(sandbox.spec.command or self.command)
        kwargs: dict[str, Any] = {
            "container": options.container_name,
            "stdin": True,
            "stdout": True,
            "stderr": False,  # the API server rejects stderr together with tty
            "tty": True,
            "_preload_content": False,
        }
        try:
            if self.connect_mode == "exec":
                pending = await clients.ws_core.connect_get_namespaced_pod_exec(
                    sandbox.name, options.namespace, command=command, **kwargs
                )
            else:
                pending = await clients.ws_core.connect_get_namespaced_pod_attach(
                    sandbox.name, options.namespace, **kwargs
                )
            ws: aiohttp.ClientWebSocketResponse = await asyncio.wait_for(
                pending, self.request_timeout
            )
        except aiohttp.WSServerHandshakeError as e:
            if e.status == 403:
                raise SandboxError(
                    f"the Jupyter server is not allowed to {self.connect_mode} into pods in "
                    f"namespace {options.namespace} (its Role needs pods/{self.connect_mode} "
                    "create and get)",
                    reason="Forbidden",
                ) from None
            raise SandboxError(
                f"connecting to the sandbox failed (HTTP {e.status} {e.message})",
                reason="ConnectFailed",
            ) from None
        except (asyncio.TimeoutError, aiohttp.ClientError, OSError) as e:
            raise SandboxError(
                f"the Kubernetes API server is unreachable ({type(e).__name__} {e})".strip(),
                reason="APIUnavailable",
            ) from None
        stream = ChannelStream(ws)
        self.log.debug(
            "claude-pods: %s %s over %s", self.connect_mode, sandbox.name, stream.protocol
        )
        return stream

    async def stop(self, sandbox: Sandbox) -> None:
        unsubscribe = sandbox.extra.pop("unsubscribe", None)
        if unsubscribe is not None:
            unsubscribe()
        self._owned.discard(sandbox.name)
        await self.delete_pod(sandbox.name)

    def _reconcile(self, name: str, pod: Pod | None) -> None:
        """Delete pods of our instance that no session owns.

        Catches what a one-off sweep cannot: a create whose request was cancelled (the
        terminal closed while starting) but which the API server completed anyway.
        """
        if pod is None or name in self._owned or name in self._deleting:
            return
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            return
        self.log.warning("claude-pods: deleting orphan sandbox pod %s", name)
        task = asyncio.create_task(self.delete_pod(name))
        self._deleting[name] = task
        task.add_done_callback(lambda _: self._deleting.pop(name, None))

    async def delete_pod(self, name: str) -> None:
        """Delete one of our pods; 404 counts as done; never raises."""
        if self._clients is None or self._options is None:
            return
        core, ns = self._clients.core, self._options.namespace
        try:
            status, body = await self._retrying(
                f"delete pod {name}",
                lambda: core.delete_namespaced_pod(
                    name,
                    ns,
                    grace_period_seconds=self.delete_grace_period,
                    _preload_content=False,
                    _request_timeout=self.request_timeout,
                ),
            )
        except SandboxError as e:
            self.log.error("claude-pods: could not delete sandbox pod %s: %s", name, e.message)
            return
        if status not in (200, 202, 404):
            self.log.error(
                "claude-pods: could not delete sandbox pod %s: HTTP %s %s",
                name,
                status,
                body.get("message", ""),
            )
        else:
            self.log.info("claude-pods: deleted sandbox pod %s", name)

    async def sweep(self) -> int:
        """Delete pods of our instance that no session owns: leftovers of a crash.

        Chosen over re-adopting them: a crashed server lost the terminals' replay
        buffers and tokens, and sessions that survive restarts are a planned feature
        of their own.
        """
        await self.startup()
        if self._config_error or self._clients is None or self._options is None:
            return 0
        core, options = self._clients.core, self._options
        status, body = await self._retrying(
            "list leftover pods",
            lambda: core.list_namespaced_pod(
                options.namespace,
                label_selector=objects.instance_selector(options),
                _preload_content=False,
                _request_timeout=self.request_timeout,
            ),
        )
        if status != 200:
            self.log.error("claude-pods: listing leftover pods failed: HTTP %s", status)
            return 0
        names = [p["metadata"]["name"] for p in body.get("items") or []]
        await asyncio.gather(*(self.delete_pod(n) for n in names))
        if names:
            self.log.warning(
                "claude-pods: deleted %d leftover sandbox pod(s): %s", len(names), names
            )
        return len(names)
