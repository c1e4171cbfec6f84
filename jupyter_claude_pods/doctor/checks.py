"""The checks that only read: API version, RBAC, namespace labels, images, the proxy.

Each is an async function returning one :class:`Check`; none raises for a cluster
problem (that is the answer), and none changes anything in the cluster.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes_asyncio import client

from ..sandbox.kubernetes.client import in_cluster
from .kube import Cluster, Unreachable
from .model import Check

PSA_PREFIX = "pod-security.kubernetes.io/"
PSA_LEVEL = "restricted"
#: The Pod Security Standards version the manifests pin (``enforce-version``).
PSA_VERSION = "v1.34"


# --------------------------------------------------------------------------- API


async def check_api(cluster: Cluster) -> Check:
    """``GET /version``: is the API server there, and does it accept our credentials?"""
    try:
        status, body = await cluster.request(
            lambda: client.VersionApi(cluster.clients.api).get_code(_preload_content=False)
        )
    except Unreachable as e:
        return Check(
            "api",
            "fail",
            f"cannot reach the Kubernetes API server at {cluster.server}: {e}",
            "Is k3s running on the server (sudo systemctl status k3s)? Is port 6443 open "
            "from here (firewall, VPN route)? Does the kubeconfig name the server's "
            "address rather than 127.0.0.1, and does the k3s certificate cover that name "
            "(k3s --tls-san)?",
            data={"server": cluster.server},
        )
    if status in (401, 403):
        return Check(
            "api",
            "fail",
            f"the API server at {cluster.server} rejected the credentials (HTTP {status})",
            "The kubeconfig's token or client certificate is wrong or expired; copy it "
            "again from the server (/etc/rancher/k3s/k3s.yaml).",
            data={"server": cluster.server, "status": status},
        )
    if status != 200:
        return Check(
            "api",
            "fail",
            f"GET /version answered HTTP {status}: {body.get('message', '')}".strip(),
            "Check the API server's health: kubectl get --raw /readyz?verbose",
            data={"server": cluster.server, "status": status},
        )
    version = str(body.get("gitVersion") or f"{body.get('major')}.{body.get('minor')}")
    data = {"server": cluster.server, "version": version}
    try:
        minor = int(str(body.get("minor", "")).rstrip("+"))
    except ValueError:
        minor = 0
    if str(body.get("major")) == "1" and 0 < minor < 25:
        return Check(
            "api",
            "warn",
            f"Kubernetes {version} at {cluster.server} is older than 1.25",
            "Pod Security Admission (the namespace's restricted labels) needs 1.25 or "
            "later; the manifests are validated against 1.34.",
            data=data,
        )
    return Check("api", "ok", f"Kubernetes {version} at {cluster.server}", data=data)


# --------------------------------------------------------------------------- RBAC


@dataclass(frozen=True)
class Permission:
    """One verb on one resource the server (or the doctor) uses in the namespace."""

    resource: str
    verb: str
    subresource: str = ""
    #: ``""``: always needed; ``"exec"``/``"attach"``: only in that connect mode;
    #: ``"events"``: granted by the manifests but not read by the server yet.
    needed_for: str = ""

    @property
    def label(self) -> str:
        sub = f"/{self.subresource}" if self.subresource else ""
        return f"{self.resource}{sub} {self.verb}"


PERMISSIONS: tuple[Permission, ...] = (
    *(Permission("pods", v) for v in ("create", "get", "list", "watch", "delete")),
    *(Permission("pods", v, "exec", "exec") for v in ("create", "get")),
    *(Permission("pods", v, "attach", "attach") for v in ("create", "get")),
    *(Permission("events", v, needed_for="events") for v in ("get", "list", "watch")),
)

RBAC_HINT = (
    "Grant them with the Role and RoleBinding of manifests/base (kubectl apply -k "
    "manifests/overlays/k3s); exec and attach need both create and get (the WebSocket "
    "upgrade starts as a GET). Run the doctor in the Jupyter pod to check the server's "
    "own ServiceAccount: kubectl -n claude-pods exec deploy/claude-pods-jupyter -- "
    "jupyter claude-pods doctor"
)


def _review(namespace: str, perm: Permission) -> dict[str, Any]:
    attributes = {"namespace": namespace, "verb": perm.verb, "resource": perm.resource}
    if perm.subresource:
        attributes["subresource"] = perm.subresource
    return {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attributes},
    }


async def check_rbac(cluster: Cluster, connect_mode: str) -> Check:
    """A SelfSubjectAccessReview per permission: what *these* credentials may do."""
    # Typed Any: called with _preload_content=False (raw responses, plain dict bodies).
    api: Any = client.AuthorizationV1Api(cluster.clients.api)

    async def review(perm: Permission) -> bool:
        status, body = await cluster.request(
            lambda: api.create_self_subject_access_review(
                _review(cluster.namespace, perm), _preload_content=False
            )
        )
        if status not in (200, 201):
            message = body.get("message") or f"HTTP {status}"
            raise RuntimeError(f"SelfSubjectAccessReview failed: {message}")
        return bool((body.get("status") or {}).get("allowed"))

    try:
        answers = await asyncio.gather(*(review(p) for p in PERMISSIONS))
    except (Unreachable, RuntimeError) as e:
        return Check("rbac", "fail", f"could not check permissions: {e}", RBAC_HINT)
    denied = [p for p, allowed in zip(PERMISSIONS, answers, strict=True) if not allowed]
    # The doctor itself execs its probe, so exec create stays needed in attach mode.
    hard = [
        p
        for p in denied
        if p.needed_for == ""
        or p.needed_for == connect_mode
        or (p.needed_for == "exec" and p.verb == "create")
    ]
    data = {
        "namespace": cluster.namespace,
        "checked": [p.label for p in PERMISSIONS],
        "denied": [p.label for p in denied],
    }
    if hard:
        return Check(
            "rbac",
            "fail",
            f"denied in namespace {cluster.namespace}: " + ", ".join(p.label for p in denied),
            RBAC_HINT,
            data=data,
        )
    if denied:
        why = {
            "events": "not read by the server yet",
            "exec": "not used in attach mode",
            "attach": "not used in exec mode",
        }
        parts = [f"{p.label} ({why.get(p.needed_for, 'optional')})" for p in denied]
        return Check(
            "rbac",
            "warn",
            f"all required permissions granted in {cluster.namespace}; denied: " + ", ".join(parts),
            RBAC_HINT,
            data=data,
        )
    return Check(
        "rbac",
        "ok",
        f"all {len(PERMISSIONS)} permissions granted in namespace {cluster.namespace}",
        data=data,
    )


# --------------------------------------------------------------------------- namespace


def _label_command(namespace: str) -> str:
    labels = " ".join(
        f"{PSA_PREFIX}{mode}={PSA_LEVEL} {PSA_PREFIX}{mode}-version={PSA_VERSION}"
        for mode in ("enforce", "audit", "warn")
    )
    return f"kubectl label --overwrite namespace {namespace} {labels}"


async def check_namespace(cluster: Cluster) -> Check:
    """The sandbox namespace exists and enforces the *restricted* Pod Security Standard."""
    ns = cluster.namespace
    try:
        status, body = await cluster.request(
            lambda: cluster.core.read_namespace(ns, _preload_content=False)
        )
    except Unreachable as e:
        return Check("namespace", "fail", f"could not read namespace {ns}: {e}")
    if status == 404:
        return Check(
            "namespace",
            "fail",
            f"namespace {ns} does not exist",
            "Apply the manifests (kubectl apply -k manifests/overlays/k3s), or set "
            "KubernetesBackend.namespace to the sandbox namespace.",
        )
    if status == 403:
        return Check(
            "namespace",
            "warn",
            f"not allowed to read namespace {ns}; its Pod Security labels were not checked",
            "The server's ServiceAccount has no right to read namespaces (as intended). "
            "Run the doctor once with an administrator's kubeconfig to check the labels.",
        )
    if status != 200:
        return Check("namespace", "fail", f"reading namespace {ns} answered HTTP {status}")
    labels: dict[str, str] = dict((body.get("metadata") or {}).get("labels") or {})
    psa = {k: v for k, v in labels.items() if k.startswith(PSA_PREFIX)}
    data = {"namespace": ns, "labels": psa}
    phase = (body.get("status") or {}).get("phase")
    if phase == "Terminating":
        return Check("namespace", "fail", f"namespace {ns} is being deleted", data=data)
    enforce = labels.get(f"{PSA_PREFIX}enforce")
    if enforce != PSA_LEVEL:
        found = f"enforce={enforce}" if enforce else "no enforce label"
        return Check(
            "namespace",
            "fail",
            f"namespace {ns} does not enforce the restricted Pod Security Standard ({found})",
            "Sandboxes run untrusted commands; label the namespace so the API server "
            f"rejects any pod that is not restricted: {_label_command(ns)}",
            data=data,
        )
    missing = [
        f"{PSA_PREFIX}{mode}"
        for mode in ("audit", "warn")
        if labels.get(f"{PSA_PREFIX}{mode}") != PSA_LEVEL
    ]
    version = labels.get(f"{PSA_PREFIX}enforce-version", "latest")
    if missing:
        return Check(
            "namespace",
            "warn",
            f"namespace {ns} enforces restricted ({version}); not set to restricted: "
            + ", ".join(missing),
            f"Add them so violations are also logged and shown: {_label_command(ns)}",
            data=data,
        )
    return Check(
        "namespace", "ok", f"namespace {ns} enforces restricted (version {version})", data=data
    )


# --------------------------------------------------------------------------- images


def _split_tag(ref: str) -> tuple[str, str]:
    slash, colon = ref.rfind("/"), ref.rfind(":")
    return (ref[:colon], ref[colon + 1 :]) if colon > slash else (ref, "")


def normalise_image(image: str) -> str:
    """The fully qualified reference a node reports.

    ``busybox`` → ``docker.io/library/busybox:latest``, as the kubelet lists it.
    """
    name, _, digest = image.partition("@")
    first = name.split("/", 1)[0]
    if "/" not in name:
        name = f"docker.io/library/{name}"
    elif "." not in first and ":" not in first and first != "localhost":
        name = f"docker.io/{name}"
    repo, tag = _split_tag(name)
    return f"{repo}@{digest}" if digest else f"{repo}:{tag or 'latest'}"


async def check_image(cluster: Cluster, image: str, pull_policy: str) -> Check:
    """Is the sandbox image on a node (``status.images``)?

    Only a warning when it is not listed: the kubelet reports at most 50 images per
    node, and a registry pull (``imagePullPolicy`` other than ``Never``) may still work.
    The sandbox check below finds out for sure.
    """
    try:
        status, body = await cluster.request(lambda: cluster.core.list_node(_preload_content=False))
    except Unreachable as e:
        return Check("image", "fail", f"could not list nodes: {e}")
    if status == 403:
        return Check(
            "image",
            "skip",
            "not allowed to list nodes; the image was not looked for "
            "(the sandbox check below starts it)",
        )
    if status != 200:
        return Check("image", "warn", f"listing nodes answered HTTP {status}")
    wanted = normalise_image(image)
    nodes = body.get("items") or []
    found = [
        str(node["metadata"]["name"])
        for node in nodes
        if any(
            normalise_image(str(name)) == wanted
            for entry in (node.get("status") or {}).get("images") or []
            for name in entry.get("names") or []
        )
    ]
    data = {"image": image, "nodes": found, "node_count": len(nodes)}
    if found:
        return Check("image", "ok", f"{image} is on node(s) {', '.join(found)}", data=data)
    return Check(
        "image",
        "warn",
        f"{image} is not listed on any of {len(nodes)} node(s)",
        "Build and import it on the server (scripts/build-images.sh --import-k3s puts it in k3s's "
        "containerd; check with sudo k3s ctr images ls | grep claude-pods). Nodes list "
        "at most 50 images, so a present image can be missing here; with "
        f"imagePullPolicy {pull_policy} the sandbox check below is the real test.",
        data=data,
    )


# --------------------------------------------------------------------------- proxy


def _cluster_internal(host: str) -> bool:
    return host.endswith((".svc", ".svc.cluster.local", ".cluster.local")) or "." not in host


async def check_proxy(proxy_url: str, timeout: float) -> Check:
    """The key proxy answers ``GET /healthz`` at ``proxy_url``, as seen from here."""
    if not proxy_url:
        return Check(
            "proxy",
            "fail",
            "KubernetesBackend.proxy_url is not set: sandboxes get no ANTHROPIC_BASE_URL",
            "Set it to the proxy Service, e.g. "
            "http://claude-pods-proxy.claude-pods.svc.cluster.local:8787",
        )
    url = proxy_url.rstrip("/") + "/healthz"
    host = urllib.parse.urlsplit(proxy_url).hostname or ""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(url, allow_redirects=False) as resp,
        ):
            status = resp.status
            try:
                body = await resp.json(content_type=None)
            except ValueError:
                body = None
    except (asyncio.TimeoutError, aiohttp.ClientError, OSError) as e:
        problem = str(e) or type(e).__name__
        if not in_cluster() and _cluster_internal(host):
            return Check(
                "proxy",
                "warn",
                f"{url} cannot be reached from outside the cluster ({problem})",
                "Check it from the server's side: kubectl -n claude-pods exec "
                "deploy/claude-pods-jupyter -- jupyter claude-pods doctor",
                data={"url": url},
            )
        return Check(
            "proxy",
            "fail",
            f"the key proxy at {url} did not answer: {problem}",
            "Is the proxy running (kubectl -n claude-pods get pods,endpoints "
            "claude-pods-proxy)? Does the Jupyter pod's NetworkPolicy allow egress to it "
            "on 8787?",
            data={"url": url},
        )
    if status != 200 or not isinstance(body, dict) or body.get("status") != "ok":
        return Check(
            "proxy",
            "fail",
            f"GET {url} answered HTTP {status}, not the proxy's health document",
            "proxy_url must point at claude-pods-proxy (port 8787), not another service.",
            data={"url": url, "status": status},
        )
    return Check("proxy", "ok", f"the key proxy answers at {url}", data={"url": url})
