"""The one check that changes something: a throw-away sandbox probes its own network.

Why a real sandbox: NetworkPolicy is enforced (or not) by the CNI on the node, and
only a pod with the sandbox's labels in the sandbox namespace is subject to exactly
the policies sandboxes get. The pod is built and started by the server's own
:class:`KubernetesBackend` (so by the pure ``make_pod``: restricted, read-only root,
no token) and always deleted.

k3s's network policy controller programs a new pod's rules a few seconds after it
starts, and until then everything is open. So the forbidden targets are probed
repeatedly for up to ``wait`` seconds: a target counts as blocked once
:data:`STABLE_ROUNDS` consecutive probes could not connect, and as NOT blocked if the
last probe still connected.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.resources
import ipaddress
import secrets
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from ..sandbox.base import Sandbox, SandboxError
from ..sandbox.kubernetes import objects
from ..sandbox.kubernetes.backend import KubernetesBackend
from ..sandbox.spec import SandboxSpec
from .kube import Cluster, Unreachable
from .model import Check, skipped

PROBE_MARKER = "CLAUDE-PODS-PROBE "
#: Probe target naming the API server's Service as the pod sees it.
KUBERNETES_TARGET = "@kubernetes"
STABLE_ROUNDS = 2
ROUND_PAUSE = 0.5
#: Backstop lifetime of the throw-away pod should the doctor die before deleting it.
POD_DEADLINE_SECONDS = 600
DOCTOR_USER = "claude-pods-doctor"

NOT_BLOCKED_HINT = (
    "NetworkPolicy is not enforced for sandboxes. Check that the policies exist "
    "(kubectl -n {ns} get networkpolicy: a default-deny and an allow to the proxy and DNS, "
    "from manifests/base). k3s enforces them with its embedded kube-router unless the "
    "server runs with --disable-network-policy; with another CNI (e.g. "
    "--flannel-backend=none) install one that enforces NetworkPolicy (Calico, Cilium). "
    "Until this passes, a person typing !cmd in Claude Code can reach these targets."
)
PROXY_HINT = (
    "The sandbox NetworkPolicy must allow egress to the proxy pods "
    "(app.kubernetes.io/name=claude-pods-proxy in namespace claude-pods) on TCP 8787 and "
    "to kube-dns on UDP/TCP 53; check kubectl -n claude-pods get endpoints "
    "claude-pods-proxy and the proxy's ingress policy."
)


class ProbeError(Exception):
    """The probe could not run (exec refused, no bash in the image, no output)."""


def parse_target(text: str) -> str:
    """Validate a ``--forbidden`` value (``host:port`` or ``[v6]:port``); return it."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"forbidden target {text!r} must be host:port")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(f"forbidden target {text!r}: unbalanced [")
        ipaddress.IPv6Address(host[1:-1])
    elif ":" in host or "/" in host or " " in host:
        raise ValueError(f"forbidden target {text!r} must be host:port ([v6]:port for IPv6)")
    return f"{host}:{int(port)}"


def proxy_target(proxy_url: str) -> str | None:
    """``host:port`` of the proxy URL (port from the scheme when absent)."""
    if not proxy_url:
        return None
    parts = urllib.parse.urlsplit(proxy_url)
    if not parts.hostname:
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port}"


def probe_script() -> str:
    """The bash probe, without its comment lines (it travels in the exec URL)."""
    text = importlib.resources.files(__package__).joinpath("probe.sh").read_text("utf-8")
    return "\n".join(line for line in text.splitlines() if not line.startswith("#"))


def probe_command(seconds: float, specs: list[str]) -> tuple[str, ...]:
    """argv of one probe run: ``bash -c SCRIPT claude-pods-probe SECONDS TARGET...``."""
    return ("bash", "-c", probe_script(), "claude-pods-probe", f"{seconds:g}", *specs)


def parse_probe_output(text: str) -> list[dict[str, Any]]:
    """The result lines (``CLAUDE-PODS-PROBE target address result message``) in ``text``."""
    results = []
    for line in text.splitlines():
        line = line.strip("\r")
        if line.startswith(PROBE_MARKER):
            parts = line[len(PROBE_MARKER) :].split(" ", 3)
            if len(parts) >= 3:
                message = parts[3].strip() if len(parts) == 4 else ""
                results.append(
                    {"target": parts[0], "address": parts[1], "result": parts[2], "code": message}
                )
    if not results:
        raise ProbeError("the probe printed no result")
    return results


@dataclass
class _Target:
    spec: str
    label: str
    must_reach: bool
    attempts: int = 0
    blocked_streak: int = 0
    last: dict[str, Any] = field(default_factory=dict)
    connected_once: bool = False

    @property
    def connected(self) -> bool:
        return self.last.get("result") == "connected"

    @property
    def settled(self) -> bool:
        if self.must_reach:
            return self.connected
        return self.blocked_streak >= STABLE_ROUNDS

    def update(self, result: dict[str, Any]) -> None:
        self.attempts += 1
        self.last = result
        if self.connected:
            self.connected_once = True
            self.blocked_streak = 0
        else:
            self.blocked_streak += 1

    def describe(self) -> str:
        address = self.last.get("address") or self.spec
        result = self.last.get("result", "not probed")
        code = self.last.get("code")
        how = f"{result} ({code})" if code else result
        late = ""
        if not self.must_reach and self.connected_once and not self.connected:
            late = "; reachable at first (the policy came into force late)"
        return f"{self.label} {address}: {how}, {self.attempts} attempt(s){late}"

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.spec,
            "label": self.label,
            "address": self.last.get("address", ""),
            "result": self.last.get("result", ""),
            "code": self.last.get("code", ""),
            "attempts": self.attempts,
            "connected_once": self.connected_once,
            "blocked": not self.must_reach and bool(self.last) and not self.connected,
        }


@dataclass
class EgressSettings:
    proxy_url: str
    forbidden: tuple[str, ...] = ()
    #: Seconds to keep probing forbidden targets that still connect.
    wait: float = 10.0
    #: Seconds one TCP connect may take inside the sandbox.
    connect_timeout: float = 3.0
    #: Also probe the API server's Service (``$KUBERNETES_SERVICE_HOST``).
    probe_kubernetes: bool = True


async def _probe_once(
    backend: KubernetesBackend, sandbox: Sandbox, specs: list[str], settings: EgressSettings
) -> list[dict[str, Any]]:
    """One exec of the probe in the sandbox; its results in ``specs`` order."""
    sandbox.spec = dataclasses.replace(
        sandbox.spec, command=probe_command(settings.connect_timeout, specs)
    )
    try:
        stream = await backend.connect(sandbox)
    except SandboxError as e:
        raise ProbeError(e.message) from None
    chunks: list[bytes] = []

    async def read_all() -> None:
        while chunk := await stream.read():
            chunks.append(chunk)

    try:
        await asyncio.wait_for(read_all(), settings.connect_timeout + backend.request_timeout)
    except asyncio.TimeoutError:
        raise ProbeError("the probe did not finish in time") from None
    finally:
        await stream.close()
    text = b"".join(chunks).decode("utf-8", "replace")
    try:
        results = parse_probe_output(text)
    except (ProbeError, ValueError):
        status = stream.exit_status
        message = getattr(stream, "status_message", "") or text.strip()[-300:]
        if status == 127 or "not found" in message or "no such file" in message.lower():
            raise ProbeError(
                "bash or timeout was not found in the sandbox image (the probe runs "
                "`bash -c` with /dev/tcp): " + message
            ) from None
        raise ProbeError(f"the probe printed no result (exit status {status}): {message}") from None
    by_target = {str(r.get("target")): r for r in results}
    return [by_target.get(s, {"target": s, "result": "error", "code": "NORESULT"}) for s in specs]


async def _verify_deleted(cluster: Cluster, name: str) -> Check:
    try:
        status, body = await cluster.request(
            lambda: cluster.core.read_namespaced_pod(
                name, cluster.namespace, _preload_content=False
            )
        )
    except Unreachable as e:
        status, body = 0, {"message": str(e)}
    data = {"pod": name}
    if status == 404:
        return Check("cleanup", "ok", f"throw-away pod {name} deleted", data=data)
    if status == 200 and (body.get("metadata") or {}).get("deletionTimestamp"):
        return Check("cleanup", "ok", f"throw-away pod {name} is being deleted", data=data)
    return Check(
        "cleanup",
        "fail",
        f"throw-away pod {name} may still exist ({body.get('message') or f'HTTP {status}'})",
        f"Delete it: kubectl -n {cluster.namespace} delete pod {name} (it also ends by "
        f"itself after {POD_DEADLINE_SECONDS} s)",
        data=data,
    )


def _start_hint(error: SandboxError) -> str:
    message = error.message
    if "PodSecurity" in message:
        return (
            "The namespace's Pod Security admission rejected the sandbox pod; the pod "
            "builder targets restricted v1.34, so check the namespace's enforce-version "
            "label and any extra_* settings (runtime_class_name, tolerations)."
        )
    if error.reason == "QuotaExceeded":
        return "The sandbox namespace's ResourceQuota is used up; close sandboxes or raise it."
    if error.reason == "Forbidden":
        return "The credentials may not create pods in the sandbox namespace (see rbac)."
    if any(r in message for r in ("ErrImageNeverPull", "ImagePull", "ErrImagePull")):
        return (
            "The node does not have the sandbox image: build and import it "
            "(scripts/build-images.sh --import-k3s), and use imagePullPolicy IfNotPresent or Never "
            "for side-loaded images."
        )
    if error.reason == "StartTimeout":
        return "kubectl -n <namespace> describe pod shows why it did not start (events)."
    return "kubectl -n <namespace> get events --sort-by=.lastTimestamp shows more."


async def check_egress(
    cluster: Cluster, backend: KubernetesBackend, settings: EgressSettings
) -> list[Check]:
    """Start a throw-away sandbox, probe from it, delete it.

    ``backend`` must be the doctor's own: its instance, connect mode and deadline are
    changed for the throw-away pod. Returns the ``sandbox``, ``egress-proxy``,
    ``egress-blocked`` and ``cleanup`` checks.
    """
    token = secrets.token_hex(4)
    # Our own instance label: neither the server's reconciler nor its start-up sweep
    # (which select on their instance) ever sees this pod as theirs.
    backend.instance = f"{DOCTOR_USER}-{token}"
    backend.namespace = cluster.namespace
    # Never attach: in attach mode the container's main process would be Claude Code.
    backend.connect_mode = "exec"
    configured = backend.active_deadline_seconds
    backend.active_deadline_seconds = min(configured or POD_DEADLINE_SECONDS, POD_DEADLINE_SECONDS)
    spec = SandboxSpec(session_id=token, user=DOCTOR_USER, terminal="doctor")
    name = objects.pod_name(spec)
    progress: list[str] = []
    sandbox: Sandbox | None = None
    checks: list[Check] = []
    try:
        started = asyncio.get_running_loop().time()
        try:
            try:
                sandbox = await backend.start(spec, progress.append)
            except (SandboxError, asyncio.CancelledError):
                raise
            except Exception as e:  # e.g. a pod option the builder refuses
                raise SandboxError(f"{type(e).__name__}: {e}", reason="Error") from e
        except SandboxError as e:
            checks.append(
                Check(
                    "sandbox",
                    "fail",
                    f"the throw-away sandbox {name} did not start: {e.message}",
                    _start_hint(e).replace("<namespace>", cluster.namespace),
                    data={"pod": name, "reason": e.reason},
                )
            )
            why = "the throw-away sandbox did not start"
            checks += [skipped("egress-proxy", why), skipped("egress-blocked", why)]
        else:
            checks.append(
                Check(
                    "sandbox",
                    "ok",
                    f"throw-away sandbox {name} started in namespace {cluster.namespace} "
                    f"in {asyncio.get_running_loop().time() - started:.1f} s",
                    data={"pod": name},
                )
            )
            checks += await _probe(backend, sandbox, cluster, settings)
    finally:
        if sandbox is not None:
            await backend.stop(sandbox)
        await backend.shutdown()
        checks.append(await _verify_deleted(cluster, name))
    return checks


async def _probe(
    backend: KubernetesBackend, sandbox: Sandbox, cluster: Cluster, settings: EgressSettings
) -> list[Check]:
    proxy = proxy_target(settings.proxy_url)
    targets: list[_Target] = []
    if proxy:
        targets.append(_Target(proxy, "the key proxy", must_reach=True))
    if settings.probe_kubernetes:
        targets.append(_Target(KUBERNETES_TARGET, "the Kubernetes API service", False))
    targets += [_Target(parse_target(t), "forbidden target", False) for t in settings.forbidden]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.wait
    error = ""
    while True:
        pending = [t for t in targets if not t.settled]
        if not pending:
            break
        try:
            results = await _probe_once(backend, sandbox, [t.spec for t in pending], settings)
        except ProbeError as e:
            error = str(e)
            break
        for target, result in zip(pending, results, strict=True):
            target.update(result)
        if loop.time() >= deadline:
            break
        if any(not t.settled for t in targets):
            await asyncio.sleep(ROUND_PAUSE)
    forbidden = [t for t in targets if not t.must_reach]
    data_blocked = {"targets": [t.to_json() for t in forbidden], "wait_seconds": settings.wait}
    if error:
        fail = Check(
            "egress-proxy",
            "fail",
            f"the probe could not run in the sandbox: {error}",
            "The doctor execs a bash probe in the sandbox (pods/exec create); see rbac.",
        )
        return [fail, Check("egress-blocked", "fail", fail.detail, fail.hint, data_blocked)]
    checks: list[Check] = []
    if proxy:
        target = targets[0]
        data = {"targets": [target.to_json()]}
        if target.connected:
            checks.append(
                Check("egress-proxy", "ok", f"sandbox reached {target.describe()}", data=data)
            )
        else:
            checks.append(
                Check(
                    "egress-proxy",
                    "fail",
                    f"the sandbox cannot reach {target.describe()}",
                    PROXY_HINT,
                    data=data,
                )
            )
    else:
        checks.append(skipped("egress-proxy", "no proxy URL configured (see proxy)"))
    if not forbidden:
        checks.append(skipped("egress-blocked", "no forbidden target to probe"))
        return checks
    open_ = [t for t in forbidden if t.connected]
    blocked = [t for t in forbidden if not t.connected]
    parts = []
    if open_:
        parts.append("NOT blocked: " + "; ".join(t.describe() for t in open_))
    if blocked:
        parts.append("blocked: " + "; ".join(t.describe() for t in blocked))
    detail = " | ".join(parts)
    if open_:
        hint = NOT_BLOCKED_HINT.format(ns=cluster.namespace)
        checks.append(Check("egress-blocked", "fail", detail, hint, data=data_blocked))
    else:
        checks.append(Check("egress-blocked", "ok", detail, data=data_blocked))
    return checks
