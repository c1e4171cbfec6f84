"""Our deployment rules, as functions of the rendered objects that return violations.

Each ``check_*`` returns a list of human-readable violations (``[]`` = compliant), so
the same function is run on every rendered overlay (expecting nothing) and on
deliberately broken variants (expecting the one violation the break causes; see
``test_checks_catch.py``). The names and numbers come from the deployment contract
(issue 7) and are repeated here on purpose: a test that read them from the manifests
would agree with any mistake in them.
"""

from __future__ import annotations

import asyncio
import posixpath
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate  # type: ignore[import-untyped]
from jupyter_core.paths import SYSTEM_CONFIG_PATH
from jupyter_server.serverapp import ServerApp
from jupyter_server_terminals.app import TerminalsExtensionApp
from kubernetes.utils import parse_quantity
from traitlets.config import Config

from jupyter_claude_pods import __version__
from jupyter_claude_pods.courses.config import CoursesConfig
from jupyter_claude_pods.sandbox.kubernetes.backend import KubernetesBackend
from jupyter_claude_pods.sandbox.kubernetes.objects import make_pod
from jupyter_claude_pods.sandbox.kubernetes.pss import (
    hardening_violations,
    restricted_violations,
    restricted_violations_spec,
)
from jupyter_claude_pods.sandbox.spec import CourseMount, SandboxSpec
from jupyter_claude_pods.terminals.manager import SandboxTerminalManager

from .netpol import Endpoint, allowed

Obj = dict[str, Any]
K8S_VERSION = "1.34.0"

# ------------------------------------------------------------------ the contract
NS = "claude-pods"
SANDBOX_NS = "claude-pods-sandboxes"
JUPYTER = "claude-pods-jupyter"
PROXY = "claude-pods-proxy"
ROLE = "claude-pods-sandboxes"
ANTHROPIC_SECRET = "claude-pods-anthropic"
TOKEN_SECRET = "claude-pods-token-secret"
CONFIG_MAP = "claude-pods-jupyter-config"
COURSES_PVC = "claude-pods-courses"
DATA_PVC = "claude-pods-data"
COURSES_HOST_DIR = "/srv/claude-pods/courses"
NODE_PORT = 31000
JUPYTER_PORT = 8888
PROXY_PORT = 8787
PROXY_URL = f"http://{PROXY}.{NS}.svc.cluster.local:{PROXY_PORT}"
PSS_VERSION = "v1.34"
IMAGES = {
    name: f"localhost/claude-pods-{name}:{__version__}" for name in ("sandbox", "jupyter", "proxy")
}
NAME_LABEL = "app.kubernetes.io/name"
PART_OF = ("app.kubernetes.io/part-of", "jupyter-claude-pods")
ROLE_GRANTS = {
    ("", "pods"): {"create", "get", "list", "watch", "delete"},
    ("", "pods/exec"): {"create", "get"},
    ("", "pods/attach"): {"create", "get"},
    ("", "events"): {"get", "list", "watch"},
}
CONFIG_CLASSES = (
    ServerApp,
    TerminalsExtensionApp,
    SandboxTerminalManager,
    KubernetesBackend,
    CoursesConfig,
)

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "Pod")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


# ------------------------------------------------------------------ access helpers
def ident(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{obj.get('kind')}/{ns + '/' if ns else ''}{meta.get('name')}"


def find(objs: Sequence[Obj], kind: str, namespace: str | None = None) -> list[Obj]:
    return [
        o
        for o in objs
        if o.get("kind") == kind
        and (namespace is None or (o.get("metadata") or {}).get("namespace") == namespace)
    ]


def get(objs: Sequence[Obj], kind: str, name: str, namespace: str | None = None) -> Obj | None:
    for o in find(objs, kind, namespace):
        if o["metadata"].get("name") == name:
            return o
    return None


def pod_template(obj: Obj) -> tuple[Obj, Obj]:
    """(pod metadata, pod spec) of a workload or a Pod."""
    if obj["kind"] == "Pod":
        return obj.get("metadata") or {}, obj.get("spec") or {}
    template = obj["spec"].get("template") or {}
    return template.get("metadata") or {}, template.get("spec") or {}


def workloads(objs: Sequence[Obj]) -> Iterator[tuple[Obj, Obj, Obj]]:
    """(object, pod metadata, pod spec) of everything that runs pods."""
    for o in objs:
        if o.get("kind") in WORKLOAD_KINDS:
            meta, spec = pod_template(o)
            yield o, meta, spec


def containers(spec: Obj) -> Iterator[Obj]:
    for field in ("initContainers", "containers", "ephemeralContainers"):
        yield from spec.get(field) or []


def env_value(container: Obj, name: str) -> str | None:
    for env in container.get("env") or []:
        if env.get("name") == name:
            return env.get("value")
    return None


def secret_refs(spec: Obj) -> set[str]:
    """Every Secret a pod spec reads: volumes (plain or projected), env, envFrom."""
    names: set[str] = set()
    for volume in spec.get("volumes") or []:
        if "secret" in volume:
            names.add(volume["secret"].get("secretName"))
        for source in (volume.get("projected") or {}).get("sources") or []:
            if "secret" in source:
                names.add(source["secret"].get("name"))
    for c in containers(spec):
        for env in c.get("env") or []:
            ref = (env.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                names.add(ref.get("name"))
        for env_from in c.get("envFrom") or []:
            if "secretRef" in env_from:
                names.add(env_from["secretRef"].get("name"))
    for pull in spec.get("imagePullSecrets") or []:
        names.add(pull.get("name"))
    return names


def volume_file_paths(spec: Obj, container: Obj, source: str, name: str) -> dict[str, str]:
    """``{key: path in the container}`` for a Secret/ConfigMap volume named ``name``."""
    name_field = "secretName" if source == "secret" else "name"
    paths: dict[str, str] = {}
    for volume in spec.get("volumes") or []:
        src = volume.get(source)
        if not src or src.get(name_field) != name:
            continue
        for mount in container.get("volumeMounts") or []:
            if mount.get("name") != volume["name"] or mount.get("subPath"):
                continue
            for item in src.get("items") or []:
                paths[item["key"]] = posixpath.join(mount["mountPath"], item["path"])
    return paths


def workload(objs: Sequence[Obj], name: str) -> tuple[Obj, Obj, Obj] | None:
    for o, meta, spec in workloads(objs):
        if o["metadata"].get("name") == name and o["metadata"].get("namespace") == NS:
            return o, meta, spec
    return None


def main_container(spec: Obj) -> Obj:
    return (spec.get("containers") or [{}])[0]


def _labels_match(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def q(value: Any) -> Decimal:
    return Decimal(parse_quantity(value))


# ------------------------------------------------------------------ generic checks
def check_schema(objs: Sequence[Obj]) -> list[str]:
    """Strict validation against the 1.34 schemas, plus what the schemas do not check
    (kubernetes-validate accepts any string as a quantity or a name)."""
    violations: list[str] = []
    for obj in objs:
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            violations.append(f"{ident(obj)}: schema: {path}: {e.message}")
        except Exception as e:  # noqa: BLE001 - e.g. no schema for the kind
            violations.append(f"{ident(obj)}: schema: {type(e).__name__}: {e}")
        name = (obj.get("metadata") or {}).get("name", "")
        if not (_DNS_SUBDOMAIN.fullmatch(name) and len(name) <= 253):
            violations.append(f"{ident(obj)}: name {name!r} is not a DNS-1123 subdomain")
        for where, value in _quantities(obj):
            try:
                parse_quantity(value)
            except ValueError:
                violations.append(f"{ident(obj)}: {where}: {value!r} is not a quantity")
    return violations


def _quantities(obj: Obj) -> Iterator[tuple[str, Any]]:
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    if kind == "ResourceQuota":
        for k, v in (spec.get("hard") or {}).items():
            if not k.startswith("count/"):
                yield f"hard.{k}", v
    if kind == "LimitRange":
        for item in spec.get("limits") or []:
            for field in ("default", "defaultRequest", "max", "min", "maxLimitRequestRatio"):
                for k, v in (item.get(field) or {}).items():
                    yield f"{field}.{k}", v
    if kind == "PersistentVolume":
        for k, v in (spec.get("capacity") or {}).items():
            yield f"capacity.{k}", v
    if kind == "PersistentVolumeClaim":
        for k, v in ((spec.get("resources") or {}).get("requests") or {}).items():
            yield f"requests.{k}", v
    if kind in WORKLOAD_KINDS:
        _, pod_spec = pod_template(obj)
        for c in containers(pod_spec):
            for section in ("requests", "limits"):
                for k, v in ((c.get("resources") or {}).get(section) or {}).items():
                    yield f"{c.get('name')}.{section}.{k}", v
        for volume in pod_spec.get("volumes") or []:
            size = (volume.get("emptyDir") or {}).get("sizeLimit")
            if size is not None:
                yield f"volume {volume['name']}.sizeLimit", size


def check_labels(objs: Sequence[Obj]) -> list[str]:
    """Every object carries part-of, so `kubectl get -l` finds the whole installation."""
    key, value = PART_OF
    return [
        f"{ident(o)}: label {key}={value} missing"
        for o in objs
        if (o.get("metadata") or {}).get("labels", {}).get(key) != value
    ]


# ------------------------------------------------------------------ namespaces and RBAC
def check_namespaces(objs: Sequence[Obj]) -> list[str]:
    """Both namespaces exist and enforce (and audit, warn) PSS restricted at v1.34."""
    violations: list[str] = []
    for name in (NS, SANDBOX_NS):
        ns = get(objs, "Namespace", name)
        if ns is None:
            violations.append(f"Namespace/{name} is missing")
            continue
        labels = ns["metadata"].get("labels") or {}
        for mode in ("enforce", "audit", "warn"):
            key = f"pod-security.kubernetes.io/{mode}"
            if labels.get(key) != "restricted":
                violations.append(f"Namespace/{name}: {key} must be restricted")
            if labels.get(f"{key}-version") not in (PSS_VERSION, "latest"):
                violations.append(f"Namespace/{name}: {key}-version must be {PSS_VERSION}")
    return violations


def check_rbac(objs: Sequence[Obj]) -> list[str]:
    """Exactly the contract's Role, bound to the Jupyter ServiceAccount only."""
    violations = [
        f"{ident(o)}: no cluster-wide RBAC is needed"
        for o in objs
        if o.get("kind") in ("ClusterRole", "ClusterRoleBinding")
    ]
    for role in find(objs, "Role"):
        if (role["metadata"]["name"], role["metadata"].get("namespace")) != (ROLE, SANDBOX_NS):
            violations.append(f"{ident(role)}: unexpected Role")
        grants: dict[tuple[str, str], set[str]] = {}
        for rule in role.get("rules") or []:
            for field in ("apiGroups", "resources", "verbs"):
                if "*" in (rule.get(field) or []):
                    violations.append(f"{ident(role)}: wildcard in {field}")
            if rule.get("nonResourceURLs"):
                violations.append(f"{ident(role)}: nonResourceURLs in a Role")
            for group in rule.get("apiGroups") or []:
                for resource in rule.get("resources") or []:
                    grants.setdefault((group, resource), set()).update(rule.get("verbs") or [])
        if role["metadata"]["name"] != ROLE:
            continue
        for key in sorted(set(grants) | set(ROLE_GRANTS)):
            have, want = grants.get(key, set()), ROLE_GRANTS.get(key, set())
            label = f"{key[0] or 'core'}/{key[1]}"
            if have - want:
                violations.append(f"{ident(role)}: {label}: extra verbs {sorted(have - want)}")
            if want - have:
                violations.append(f"{ident(role)}: {label}: missing verbs {sorted(want - have)}")
    if get(objs, "Role", ROLE, SANDBOX_NS) is None:
        violations.append(f"Role/{SANDBOX_NS}/{ROLE} is missing")
    want_subjects = [{"kind": "ServiceAccount", "name": JUPYTER, "namespace": NS}]
    bindings = find(objs, "RoleBinding")
    for rb in bindings:
        where = (rb["metadata"]["name"], rb["metadata"].get("namespace"))
        if where != (JUPYTER, SANDBOX_NS):
            violations.append(f"{ident(rb)}: unexpected RoleBinding")
        if rb.get("roleRef") != {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": ROLE,
        }:
            violations.append(f"{ident(rb)}: must refer to Role {ROLE}")
        if rb.get("subjects") != want_subjects:
            violations.append(f"{ident(rb)}: subjects must be exactly {want_subjects}")
    if not bindings:
        violations.append(f"RoleBinding/{SANDBOX_NS}/{JUPYTER} is missing")
    for sa_name in (JUPYTER, PROXY):
        sa = get(objs, "ServiceAccount", sa_name, NS)
        if sa is None:
            violations.append(f"ServiceAccount/{NS}/{sa_name} is missing")
        elif sa.get("automountServiceAccountToken") is not False:
            violations.append(f"{ident(sa)}: automountServiceAccountToken must be false")
    # Which pods get an API token: the Jupyter server only, through its own account.
    for o, _, spec in workloads(objs):
        is_jupyter = o["metadata"]["name"] == JUPYTER and o["metadata"].get("namespace") == NS
        want_sa = JUPYTER if is_jupyter else (PROXY if o["metadata"]["name"] == PROXY else None)
        if want_sa and spec.get("serviceAccountName") != want_sa:
            violations.append(f"{ident(o)}: serviceAccountName must be {want_sa}")
        if spec.get("automountServiceAccountToken") is not is_jupyter:
            violations.append(f"{ident(o)}: automountServiceAccountToken must be {is_jupyter}")
    return violations


# ------------------------------------------------------------------ secrets and images
def check_secrets(objs: Sequence[Obj]) -> list[str]:
    """The Anthropic key reaches the proxy only; Jupyter gets the token secret only;
    nothing runs in, and no Secret lives in, the sandbox namespace."""
    violations: list[str] = []
    users: dict[str, list[str]] = {}
    for o, _, spec in workloads(objs):
        if o["metadata"].get("namespace") == SANDBOX_NS:
            violations.append(f"{ident(o)}: nothing but sandboxes runs in {SANDBOX_NS}")
        refs = secret_refs(spec)
        for ref in refs:
            users.setdefault(ref, []).append(o["metadata"]["name"])
        if o["metadata"]["name"] == JUPYTER and refs != {TOKEN_SECRET}:
            violations.append(f"{ident(o)}: must read exactly Secret {TOKEN_SECRET}, reads {refs}")
        for c in containers(spec):
            for env in c.get("env") or []:
                if env.get("name") == "ANTHROPIC_API_KEY":
                    violations.append(f"{ident(o)}: the key must not be an env var (a file)")
    if users.get(ANTHROPIC_SECRET) != [PROXY]:
        violations.append(
            f"Secret {ANTHROPIC_SECRET} must be read by {PROXY} only, is by "
            f"{users.get(ANTHROPIC_SECRET)}"
        )
    for secret in find(objs, "Secret"):
        if secret["metadata"].get("namespace") != NS:
            violations.append(f"{ident(secret)}: Secrets belong in {NS} only")
    for name, key in ((ANTHROPIC_SECRET, "api-key"), (TOKEN_SECRET, "secret")):
        secret = get(objs, "Secret", name, NS)
        if secret is None:
            violations.append(f"Secret/{NS}/{name} is missing")
        elif key not in (secret.get("data") or {}):
            violations.append(f"{ident(secret)}: key {key!r} missing")
    # The files the programs are told to read are the mounted Secret keys.
    wiring = (
        (PROXY, "CLAUDE_PODS_KEY_FILE", ANTHROPIC_SECRET, "api-key"),
        (PROXY, "CLAUDE_PODS_TOKEN_SECRET_FILE", TOKEN_SECRET, "secret"),
        (JUPYTER, "CLAUDE_PODS_TOKEN_SECRET_FILE", TOKEN_SECRET, "secret"),
    )
    for name, var, secret_name, key in wiring:
        found = workload(objs, name)
        if found is None:
            violations.append(f"Deployment/{NS}/{name} is missing")
            continue
        o, _, spec = found
        c = main_container(spec)
        path = volume_file_paths(spec, c, "secret", secret_name).get(key)
        if path is None or env_value(c, var) != path:
            violations.append(
                f"{ident(o)}: {var}={env_value(c, var)!r} is not the mounted {secret_name}/{key}"
            )
    return violations


def image_problem(image: str) -> str | None:
    """Why an image reference is not pinned, or None."""
    if "@sha256:" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return "has no tag"
    if last.rsplit(":", 1)[1] == "latest":
        return "uses :latest"
    return None


def check_images(objs: Sequence[Obj], sandbox_image: str, sandbox_pull_policy: str) -> list[str]:
    """Every image is one of ours at the package's version; never pulled (k3s imports)."""
    violations: list[str] = []
    uses = [
        (f"{ident(o)} container {c.get('name')}", c.get("image", ""), c.get("imagePullPolicy"))
        for o, _, spec in workloads(objs)
        for c in containers(spec)
    ]
    uses.append(("KubernetesBackend.image", sandbox_image, sandbox_pull_policy))
    for where, image, policy in uses:
        problem = image_problem(image)
        if problem:
            violations.append(f"{where}: image {image!r} {problem}")
        elif image not in IMAGES.values():
            violations.append(f"{where}: image {image!r} is not one of {sorted(IMAGES.values())}")
        if policy not in ("IfNotPresent", "Never"):
            violations.append(f"{where}: imagePullPolicy {policy!r} (images are side-loaded)")
    if sandbox_image != IMAGES["sandbox"]:
        violations.append(f"KubernetesBackend.image must be {IMAGES['sandbox']}")
    return violations


# ------------------------------------------------------------------ pods
def check_pod_security(objs: Sequence[Obj]) -> list[str]:
    """Jupyter and proxy pods meet restricted too, plus our hardening of long-lived pods."""
    violations: list[str] = []
    for o, meta, spec in workloads(objs):
        who = ident(o)
        violations += [
            f"{who}: {v}" for v in restricted_violations_spec(spec, meta.get("annotations"))
        ]
        if (spec.get("securityContext") or {}).get("runAsNonRoot") is not True:
            violations.append(f"{who}: pod securityContext.runAsNonRoot must be true")
        if spec.get("enableServiceLinks") is not False:
            violations.append(f"{who}: enableServiceLinks must be false")
        if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
            violations.append(f"{who}: host namespaces are not allowed")
        for volume in spec.get("volumes") or []:
            if "emptyDir" in volume and not (volume["emptyDir"] or {}).get("sizeLimit"):
                violations.append(f"{who}: emptyDir {volume['name']} must set sizeLimit")
        for c in containers(spec):
            sc, name = c.get("securityContext") or {}, c.get("name")
            if sc.get("readOnlyRootFilesystem") is not True:
                violations.append(f"{who} container {name}: readOnlyRootFilesystem must be true")
            if sc.get("allowPrivilegeEscalation") is not False:
                violations.append(f"{who} container {name}: allowPrivilegeEscalation must be false")
            if (sc.get("capabilities") or {}).get("drop") != ["ALL"]:
                violations.append(f"{who} container {name}: capabilities.drop must be [ALL]")
            if sc.get("runAsUser") == 0 or sc.get("runAsNonRoot") is False:
                violations.append(f"{who} container {name}: must not run as root")
            limits = (c.get("resources") or {}).get("limits") or {}
            for resource in ("cpu", "memory"):
                if resource not in limits:
                    violations.append(f"{who} container {name}: limits.{resource} missing")
        for c in spec.get("containers") or []:
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in c:
                    violations.append(f"{who} container {c.get('name')}: {probe} missing")
    return violations


def _container_port(spec: Obj, port: int | str) -> int | None:
    for c in spec.get("containers") or []:
        for p in c.get("ports") or []:
            if port in (p.get("name"), p.get("containerPort")):
                return int(p["containerPort"])
    return None


def check_services(objs: Sequence[Obj], ingress: bool) -> list[str]:
    """Jupyter on NodePort 31000 (or behind a TLS Ingress), the proxy cluster-internal."""
    violations: list[str] = []
    for name, port, kind in ((JUPYTER, JUPYTER_PORT, "jupyter"), (PROXY, PROXY_PORT, "proxy")):
        svc, found = get(objs, "Service", name, NS), workload(objs, name)
        if svc is None or found is None:
            violations.append(f"Service or Deployment {NS}/{name} is missing")
            continue
        _, meta, spec = found
        if not _labels_match(svc["spec"].get("selector") or {}, meta.get("labels") or {}):
            violations.append(f"{ident(svc)}: selector does not select the {name} pods")
        ports = svc["spec"].get("ports") or []
        if [p.get("port") for p in ports] != [port]:
            violations.append(f"{ident(svc)}: must expose exactly port {port}")
        for p in ports:
            if _container_port(spec, p.get("targetPort", p.get("port"))) != port:
                violations.append(f"{ident(svc)}: targetPort is not the container's port {port}")
        node_port = kind == "jupyter" and not ingress
        want_type = "NodePort" if node_port else "ClusterIP"
        if svc["spec"].get("type", "ClusterIP") != want_type:
            violations.append(f"{ident(svc)}: type must be {want_type}")
        node_ports = [p.get("nodePort") for p in ports if p.get("nodePort") is not None]
        if node_ports != ([NODE_PORT] if node_port else []):
            violations.append(
                f"{ident(svc)}: nodePort must be {NODE_PORT if node_port else 'unset'}"
            )
    for svc in find(objs, "Service"):
        if svc["metadata"]["name"] not in (JUPYTER, PROXY):
            violations.append(f"{ident(svc)}: unexpected Service")
    ingresses = find(objs, "Ingress")
    if ingress and not ingresses:
        violations.append("the ingress overlay must have an Ingress")
    if not ingress and ingresses:
        violations.append("only the ingress overlay may have an Ingress")
    for ing in ingresses:
        spec = ing["spec"]
        if spec.get("ingressClassName") != "traefik":
            violations.append(f"{ident(ing)}: ingressClassName must be traefik (k3s)")
        tls = spec.get("tls") or []
        hosts = [r.get("host") for r in spec.get("rules") or []]
        if not tls or not all(t.get("secretName") for t in tls):
            violations.append(f"{ident(ing)}: must terminate TLS with a Secret")
        elif sorted(h for t in tls for h in t.get("hosts") or []) != sorted(hosts):
            violations.append(f"{ident(ing)}: TLS hosts must be the rule hosts")
        for rule in spec.get("rules") or []:
            for path in (rule.get("http") or {}).get("paths") or []:
                service = path["backend"].get("service") or {}
                if service.get("name") != JUPYTER or service.get("port") not in (
                    {"name": "http"},
                    {"number": JUPYTER_PORT},
                ):
                    violations.append(f"{ident(ing)}: must route to {JUPYTER}:{JUPYTER_PORT}")
    return violations


# ------------------------------------------------------------------ Jupyter configuration
@dataclass
class Settings:
    """The Jupyter server's configuration as the real classes read it."""

    config: Config
    manager: SandboxTerminalManager
    backend: KubernetesBackend
    courses: CoursesConfig


def jupyter_config(objs: Sequence[Obj], root: Path) -> Config:
    """The Jupyter server's configuration as it would see it in its pod.

    The ConfigMap's items are written under ``root`` where the Deployment mounts them,
    and loaded by Jupyter's own loader from the directories Jupyter searches there
    ($JUPYTER_CONFIG_PATH from the container's env first, then the system directories),
    highest priority last, as ``ServerApp.load_config_file`` does. So a wrong mount path,
    a wrong item path or a missing env var all show up as missing settings.
    """
    found = workload(objs, JUPYTER)
    if found is None:
        return Config()
    _, _, spec = found
    c = main_container(spec)
    for volume in spec.get("volumes") or []:
        cm = volume.get("configMap")
        if not cm:
            continue
        config_map = get(objs, "ConfigMap", cm["name"], NS) or {}
        data = config_map.get("data") or {}
        for mount in c.get("volumeMounts") or []:
            if mount["name"] != volume["name"]:
                continue
            for item in cm.get("items") or [{"key": k, "path": k} for k in data]:
                if item["key"] in data:
                    target = root / posixpath.join(mount["mountPath"], item["path"]).lstrip("/")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(data[item["key"]])
    search = [p for p in (env_value(c, "JUPYTER_CONFIG_PATH") or "").split(":") if p]
    search += list(SYSTEM_CONFIG_PATH)
    config = Config()
    for loaded, _ in ServerApp._load_config_files(
        "jupyter_server_config",
        path=[str(root / p.lstrip("/")) for p in search],
        raise_config_file_errors=True,
    ):
        config.merge(loaded)
    return config


def load_settings(config: Config) -> Settings:
    """The terminal manager (which makes the backend) and courses, built from ``config``."""
    manager = SandboxTerminalManager(config=config)
    backend = manager.sandbox_backend
    if not isinstance(backend, KubernetesBackend):
        raise TypeError(f"the configuration selects {type(backend).__name__}, not Kubernetes")
    return Settings(config, manager, backend, CoursesConfig(config=config))


def check_config(objs: Sequence[Obj], settings: Settings) -> list[str]:
    """The contract's settings, each a real option (a typo would be silently ignored)."""
    violations: list[str] = []
    known = {cls.__name__: set(cls.class_trait_names(config=True)) for cls in CONFIG_CLASSES}
    for section, values in settings.config.items():
        if section not in known:
            violations.append(f"config: unknown section {section}")
            continue
        for key in values:
            if key not in known[section]:
                violations.append(f"config: {section}.{key} is not an option")
    b, m, courses = settings.backend, settings.manager, settings.courses
    want = {
        # Named in the config, not only swapped in by the extension: should the package
        # fail to import, the terminals extension then fails too instead of serving
        # shells in the Jupyter pod (which holds the service-account token).
        "TerminalsExtensionApp.terminal_manager_class": (
            settings.config.get("TerminalsExtensionApp", {}).get("terminal_manager_class"),
            "jupyter_claude_pods.terminals.SandboxTerminalManager",
        ),
        "SandboxTerminalManager.backend": (m.backend, "kubernetes"),
        "KubernetesBackend.namespace": (b.namespace, SANDBOX_NS),
        "KubernetesBackend.image": (b.image, IMAGES["sandbox"]),
        "KubernetesBackend.proxy_url": (b.proxy_url, PROXY_URL),
        "KubernetesBackend.image_pull_policy": (b.image_pull_policy, "IfNotPresent"),
        "KubernetesBackend.courses_volume": (
            b.courses_volume,
            {"persistentVolumeClaim": {"claimName": COURSES_PVC, "readOnly": True}},
        ),
        "CoursesConfig.courses_dir": (courses.courses_dir, COURSES_HOST_DIR),
        "CoursesConfig.progress_db": (courses.progress_db, "/data/progress.sqlite3"),
        # A pod name changes with every restart; a fixed instance lets the new server
        # find and delete the sandboxes the old one left.
        "KubernetesBackend.instance": (b.instance, JUPYTER),
    }
    for name, (have, expected) in want.items():
        if have != expected:
            violations.append(f"config: {name} is {have!r}, must be {expected!r}")
    if "ANTHROPIC_API_KEY" in b.extra_env:
        violations.append("config: KubernetesBackend.extra_env must not hold the key")
    if m.max_sandboxes < 1:
        violations.append("config: SandboxTerminalManager.max_sandboxes must be a real cap")
    # The proxy URL names the proxy Service.
    url = urlsplit(b.proxy_url)
    host = (url.hostname or "").split(".")
    svc = get(objs, "Service", host[0], host[1] if len(host) > 1 else "")
    if svc is None or url.port not in [p.get("port") for p in svc["spec"].get("ports") or []]:
        violations.append(f"config: proxy_url {b.proxy_url} does not name the proxy Service")
    return violations


def check_storage(objs: Sequence[Obj], settings: Settings) -> list[str]:
    """Static course volumes bound both ways; every claim and mount points somewhere real."""
    violations: list[str] = []
    for pv in find(objs, "PersistentVolume"):
        ref = pv["spec"].get("claimRef") or {}
        pvc = get(objs, "PersistentVolumeClaim", ref.get("name", ""), ref.get("namespace"))
        if pvc is None or pvc["spec"].get("volumeName") != pv["metadata"]["name"]:
            violations.append(f"{ident(pv)}: not bound both ways to a claim")
            continue
        if pvc["spec"].get("storageClassName") != pv["spec"].get("storageClassName", ""):
            violations.append(f"{ident(pv)}: storageClassName differs from {ident(pvc)}")
        if pv["spec"].get("hostPath", {}).get("path") != COURSES_HOST_DIR:
            violations.append(f"{ident(pv)}: must be the host's {COURSES_HOST_DIR}")
        for o in (pv, pvc):
            if o["spec"].get("accessModes") != ["ReadOnlyMany"]:
                violations.append(f"{ident(o)}: courses are ReadOnlyMany")
    for ns in (NS, SANDBOX_NS):
        pvc = get(objs, "PersistentVolumeClaim", COURSES_PVC, ns)
        if pvc is None or not pvc["spec"].get("volumeName"):
            violations.append(f"PersistentVolumeClaim/{ns}/{COURSES_PVC} must bind a static volume")
    claim = (settings.backend.courses_volume.get("persistentVolumeClaim") or {}).get("claimName")
    if get(objs, "PersistentVolumeClaim", claim or "", SANDBOX_NS) is None:
        violations.append(f"config: courses claim {claim!r} does not exist in {SANDBOX_NS}")
    for o, _, spec in workloads(objs):
        ns = o["metadata"].get("namespace")
        for volume in spec.get("volumes") or []:
            name = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if name and get(objs, "PersistentVolumeClaim", name, ns) is None:
                violations.append(f"{ident(o)}: claim {name} does not exist")
            cm = (volume.get("configMap") or {}).get("name")
            if cm and get(objs, "ConfigMap", cm, ns) is None:
                violations.append(f"{ident(o)}: ConfigMap {cm} does not exist")
    # Where the server and the proxy write, there is a writable persistent volume.
    jupyter, proxy = workload(objs, JUPYTER), workload(objs, PROXY)
    needs = []
    if jupyter:
        c = main_container(jupyter[2])
        needs += [
            (jupyter, c, posixpath.dirname(settings.courses.progress_db), True, DATA_PVC),
            (jupyter, c, settings.config.ServerApp.get("root_dir", "/"), True, DATA_PVC),
            (jupyter, c, settings.courses.courses_dir, False, COURSES_PVC),
        ]
    if proxy:
        c = main_container(proxy[2])
        db = env_value(c, "CLAUDE_PODS_PROXY_DB") or ""
        needs.append((proxy, c, posixpath.dirname(db), True, "claude-pods-proxy-data"))
    for (o, _, spec), c, path, writable, claim_name in needs:
        if not _mounted_claim(spec, c, path, writable, claim_name):
            mode = "writable" if writable else "read-only"
            violations.append(f"{ident(o)}: {path!r} is not on a {mode} mount of {claim_name}")
    return violations


def _mounted_claim(spec: Obj, c: Obj, path: str, writable: bool, claim: str) -> bool:
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    best: Obj | None = None
    for mount in c.get("volumeMounts") or []:
        mp = mount["mountPath"].rstrip("/") or "/"
        if (path == mp or path.startswith(mp + "/")) and (
            best is None or len(mp) > len(best["mountPath"])
        ):
            best = mount
    if best is None:
        return False
    source = volumes.get(best["name"], {}).get("persistentVolumeClaim") or {}
    read_only = bool(best.get("readOnly")) or bool(source.get("readOnly"))
    return source.get("claimName") == claim and read_only is not writable


# ------------------------------------------------------------------ the sandbox pod
SANDBOX_SPEC = SandboxSpec(
    session_id="3f9c2a7b5d1e4c60",
    user="alice",
    terminal="1",
    env={"ANTHROPIC_AUTH_TOKEN": "test-session-token-not-real"},
    course=CourseMount(
        id="intro",
        subpath="intro/material",
        host_path=f"{COURSES_HOST_DIR}/intro/material",
        hidden=("course.yaml",),
    ),
)


def sandbox_pod(backend: KubernetesBackend, kubeconfig: Path) -> Obj:
    """The pod ``backend`` would create for a course terminal, via its real start-up.

    ``startup`` loads the kubeconfig (a loopback address nothing listens on: no request
    is needed to build a pod) and ``pod_options`` turns the traits into the builder's
    options, exactly as when a terminal starts; ``make_pod`` is the pure builder.
    """

    async def build() -> Obj:
        await backend.startup()
        try:
            return make_pod(SANDBOX_SPEC, backend.pod_options())
        finally:
            await backend.shutdown()

    backend.kubeconfig = str(kubeconfig)
    return asyncio.run(build())


def check_sandbox_pod(objs: Sequence[Obj], pod: Obj) -> list[str]:
    """The sandbox pod under this configuration: restricted, hardened, valid, secret-free."""
    violations = [f"sandbox: {v}" for v in restricted_violations(pod) + hardening_violations(pod)]
    try:
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        violations.append(f"sandbox: schema: {e.message}")
    spec = pod["spec"]
    if secret_refs(spec):
        violations.append(f"sandbox: reads Secrets {sorted(secret_refs(spec))}")
    for c in containers(spec):
        for env in c.get("env") or []:
            if env.get("name") == "ANTHROPIC_API_KEY":
                violations.append("sandbox: ANTHROPIC_API_KEY in the environment")
    if env_value(main_container(spec), "ANTHROPIC_BASE_URL") != PROXY_URL:
        violations.append(f"sandbox: ANTHROPIC_BASE_URL must be {PROXY_URL}")
    ns = pod["metadata"].get("namespace")
    if ns != SANDBOX_NS or get(objs, "Namespace", ns or "") is None:
        violations.append(f"sandbox: namespace {ns!r} is not the rendered {SANDBOX_NS}")
    for volume in spec.get("volumes") or []:
        claim = volume.get("persistentVolumeClaim")
        if claim and get(objs, "PersistentVolumeClaim", claim["claimName"], ns) is None:
            violations.append(f"sandbox: claim {claim['claimName']} does not exist in {ns}")
        if claim and not claim.get("readOnly"):
            violations.append(f"sandbox: claim {claim['claimName']} must be read-only")
    return violations


# ------------------------------------------------------------------ quotas
def _limit_range_defaults(item: Obj) -> tuple[Obj, Obj]:
    """(default limits, default requests) after the API's LimitRange defaulting:
    default falls back to max, defaultRequest to default."""
    default = {**(item.get("max") or {}), **(item.get("default") or {})}
    default_request = {**default, **(item.get("defaultRequest") or {})}
    return default, default_request


def effective_resources(pod: Obj, objs: Sequence[Obj]) -> list[tuple[str, Obj, Obj]]:
    """(container, requests, limits) after defaulting and the namespace's LimitRanges."""
    ns = pod["metadata"].get("namespace")
    items = [
        i
        for lr in find(objs, "LimitRange", ns)
        for i in lr["spec"]["limits"]
        if i["type"] == "Container"
    ]
    result = []
    for c in pod["spec"].get("containers") or []:
        res = c.get("resources") or {}
        limits = dict(res.get("limits") or {})
        requests = {**limits, **(res.get("requests") or {})}  # request defaults to limit
        for item in items:
            default, default_request = _limit_range_defaults(item)
            for k, v in default.items():
                limits.setdefault(k, v)
            for k, v in default_request.items():
                requests.setdefault(k, v)
        result.append((c["name"], requests, limits))
    return result


def check_quota(objs: Sequence[Obj], pod: Obj, max_sandboxes: int) -> list[str]:
    """The server's cap plus the doctor's probe fit the quota, and one sandbox fits the
    LimitRange: otherwise sandboxes fail with "exceeded quota" below the configured cap."""
    violations: list[str] = []
    ns = pod["metadata"].get("namespace")
    quotas, ranges = find(objs, "ResourceQuota", ns), find(objs, "LimitRange", ns)
    if not quotas:
        violations.append(f"no ResourceQuota in {ns}")
    if not ranges:
        violations.append(f"no LimitRange in {ns}")
    effective = effective_resources(pod, objs)
    count = max_sandboxes + 1  # the doctor's probe sandbox needs a slot too
    for name, requests, limits in effective:
        for lr in ranges:
            for item in lr["spec"]["limits"]:
                if item["type"] != "Container":
                    continue
                for k, v in (item.get("max") or {}).items():
                    if k in limits and q(limits[k]) > q(v):
                        violations.append(f"{ident(lr)}: sandbox {name} limit {k} over max {v}")
                for k, v in (item.get("min") or {}).items():
                    if k in requests and q(requests[k]) < q(v):
                        violations.append(f"{ident(lr)}: sandbox {name} request {k} under min {v}")
    for quota in quotas:
        for key, value in (quota["spec"].get("hard") or {}).items():
            if key in ("pods", "count/pods"):
                need = Decimal(count)
            elif key.startswith(("requests.", "limits.")) or key in ("cpu", "memory"):
                section, _, resource = key.partition(".") if "." in key else ("requests", "", key)
                pick = 1 if section == "requests" else 2
                per_pod = []
                for entry in effective:
                    values = entry[pick]
                    if resource not in values:
                        violations.append(f"{ident(quota)}: sandbox sets no {section}.{resource}")
                        continue
                    per_pod.append(q(values[resource]))
                need = count * sum(per_pod, Decimal(0))
            else:
                continue
            if q(value) < need:
                violations.append(
                    f"{ident(quota)}: {key}={value} is below {count} sandboxes ({need})"
                )
    # The scratch volumes fit the ephemeral-storage limit (else eviction, not an error).
    sizes = sum(
        (
            q(v["emptyDir"]["sizeLimit"])
            for v in pod["spec"].get("volumes") or []
            if "emptyDir" in v
        ),
        Decimal(0),
    )
    for name, _, limits in effective:
        if "ephemeral-storage" in limits and sizes > q(limits["ephemeral-storage"]):
            violations.append(f"sandbox {name}: emptyDir sizes exceed its ephemeral-storage limit")
    return violations


# ------------------------------------------------------------------ network policies
NODE_IP = "10.0.0.5"  # the k3s server, where the API server listens on 6443
OUTSIDE = {
    "anthropic": "160.79.104.10",
    "internet": "1.1.1.1",
    "lan": "192.168.1.10",
    "cgnat": "100.100.1.1",
    "node": NODE_IP,
    "metadata": "169.254.169.254",
    "client": "203.0.113.7",
}


def _pod_endpoint(name: str, ip: str, namespace: str, meta: Obj, spec: Obj) -> Endpoint:
    ports = {
        p["name"]: int(p["containerPort"])
        for c in spec.get("containers") or []
        for p in c.get("ports") or []
        if p.get("name")
    }
    return Endpoint(name, ip, namespace, dict(meta.get("labels") or {}), ports)


def network_endpoints(objs: Sequence[Obj], pod: Obj) -> dict[str, Endpoint]:
    """The pods (with their rendered labels) and outside addresses the checks talk about."""
    eps = {k: Endpoint(k, ip) for k, ip in OUTSIDE.items()}
    for name, key, ip in ((JUPYTER, "jupyter", "10.42.0.20"), (PROXY, "proxy", "10.42.0.21")):
        found = workload(objs, name)
        if found is not None:
            eps[key] = _pod_endpoint(key, ip, NS, found[1], found[2])
    sandbox_ns = pod["metadata"]["namespace"]
    eps["sandbox"] = _pod_endpoint(
        "sandbox", "10.42.0.30", sandbox_ns, pod["metadata"], pod["spec"]
    )
    eps["sandbox2"] = _pod_endpoint(
        "sandbox2", "10.42.0.31", sandbox_ns, pod["metadata"], pod["spec"]
    )
    eps["dns"] = Endpoint("dns", "10.42.0.10", "kube-system", {"k8s-app": "kube-dns"})
    eps["traefik"] = Endpoint(
        "traefik", "10.42.0.11", "kube-system", {"app.kubernetes.io/name": "traefik"}
    )
    eps["other"] = Endpoint("other", "10.42.0.40", "default", {"app": "other"})
    return eps


def namespace_labels(objs: Sequence[Obj]) -> dict[str, dict[str, str]]:
    labels = {ns: {} for ns in ("kube-system", "default")}
    for ns in find(objs, "Namespace"):
        labels[ns["metadata"]["name"]] = dict(ns["metadata"].get("labels") or {})
    for name, values in labels.items():
        values["kubernetes.io/metadata.name"] = name  # set by the API server
    return labels


def network_expectations(ingress: bool) -> list[tuple[str, str, int, str, bool]]:
    """(source, destination, port, protocol, allowed?) the policies must produce."""
    T, U = "TCP", "UDP"
    return [
        # Sandboxes: the proxy and DNS, nothing else, not even the Anthropic API.
        ("sandbox", "proxy", PROXY_PORT, T, True),
        ("sandbox", "dns", 53, U, True),
        ("sandbox", "dns", 53, T, True),
        ("sandbox", "proxy", 9090, T, False),
        ("sandbox", "dns", 9153, T, False),
        ("sandbox", "internet", 53, U, False),  # only the cluster's DNS: no tunnels
        ("sandbox", "internet", 53, T, False),
        ("sandbox", "anthropic", 443, T, False),
        ("sandbox", "internet", 443, T, False),
        ("sandbox", "internet", 80, T, False),
        ("sandbox", "lan", 22, T, False),
        ("sandbox", "metadata", 80, T, False),
        ("sandbox", "node", 6443, T, False),
        ("sandbox", "jupyter", JUPYTER_PORT, T, False),
        ("sandbox", "sandbox2", 8080, T, False),
        ("sandbox", "other", 80, T, False),
        # Nothing reaches a sandbox over the network (terminals go through the kubelet).
        ("jupyter", "sandbox", 8080, T, False),
        ("proxy", "sandbox", 8080, T, False),
        ("client", "sandbox", 22, T, False),
        ("other", "sandbox", 8080, T, False),
        # The proxy: in from sandboxes and the server; out to public HTTPS and DNS.
        ("jupyter", "proxy", PROXY_PORT, T, True),
        ("other", "proxy", PROXY_PORT, T, False),
        ("client", "proxy", PROXY_PORT, T, False),
        ("traefik", "proxy", PROXY_PORT, T, False),
        ("proxy", "anthropic", 443, T, True),
        ("proxy", "dns", 53, U, True),
        ("proxy", "internet", 53, U, False),
        ("proxy", "anthropic", 80, T, False),
        ("proxy", "lan", 443, T, False),
        ("proxy", "cgnat", 443, T, False),
        ("proxy", "node", 443, T, False),
        ("proxy", "node", 6443, T, False),
        ("proxy", "metadata", 443, T, False),
        ("proxy", "other", 443, T, False),
        ("proxy", "jupyter", JUPYTER_PORT, T, False),
        # The server: browsers in; the API server, the proxy and DNS out.
        ("client", "jupyter", JUPYTER_PORT, T, not ingress),
        ("traefik", "jupyter", JUPYTER_PORT, T, True),
        ("client", "jupyter", 22, T, False),
        ("jupyter", "node", 6443, T, True),
        ("jupyter", "dns", 53, U, True),
        ("jupyter", "other", 80, T, False),
        ("jupyter", "internet", 80, T, False),
    ]


def default_deny(policy: Obj) -> bool:
    spec = policy.get("spec") or {}
    return (
        spec.get("podSelector") == {}
        and sorted(spec.get("policyTypes") or []) == ["Egress", "Ingress"]
        and not spec.get("ingress")
        and not spec.get("egress")
    )


def check_network(objs: Sequence[Obj], pod: Obj, ingress: bool) -> list[str]:
    """Evaluate the rendered policies for the connections that matter (see netpol.py)."""
    policies = find(objs, "NetworkPolicy")
    violations = [
        f"NetworkPolicy default-deny (ingress and egress, all pods) missing in {ns}"
        for ns in (SANDBOX_NS, NS)
        if not any(default_deny(p) for p in policies if p["metadata"].get("namespace") == ns)
    ]
    eps, namespaces = network_endpoints(objs, pod), namespace_labels(objs)
    for src, dst, port, protocol, expected in network_expectations(ingress):
        if src not in eps or dst not in eps:
            violations.append(f"network: no pod for {src if src not in eps else dst}")
            continue
        got = allowed(policies, namespaces, eps[src], eps[dst], port, protocol)
        if got != expected:
            word = "allowed" if got else "denied"
            violations.append(f"network: {src} -> {dst}:{port}/{protocol} is {word}, must not be")
    return violations
