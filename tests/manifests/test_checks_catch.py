"""Each rule fails when broken: one deliberate mistake per case, one expected violation.

The cases start from the rendered k3s overlay (which passes every check, see
test_overlays.py), change exactly one thing, and expect the checker to name it. A
checker that stopped looking at a field would pass its overlay test; it fails here.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from . import checks
from .conftest import Rendered
from .kustomize import kustomize, prepare

Objs = list[dict[str, Any]]


@pytest.fixture
def k3s(rendered: dict[str, Rendered]) -> Rendered:
    return rendered["k3s"]


def one(objs: Objs, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    obj = checks.get(objs, kind, name, namespace)
    assert obj is not None, (kind, name, namespace)
    return obj


def proxy_spec(objs: Objs) -> dict[str, Any]:
    found = checks.workload(objs, checks.PROXY)
    assert found is not None
    return found[2]


def jupyter_spec(objs: Objs) -> dict[str, Any]:
    found = checks.workload(objs, checks.JUPYTER)
    assert found is not None
    return found[2]


def role(objs: Objs) -> dict[str, Any]:
    return one(objs, "Role", checks.ROLE, checks.SANDBOX_NS)


# ------------------------------------------------------------------ RBAC
def wildcard_verb(objs: Objs) -> None:
    role(objs)["rules"][0]["verbs"] = ["*"]


def wildcard_resource(objs: Objs) -> None:
    role(objs)["rules"].append({"apiGroups": [""], "resources": ["*"], "verbs": ["get"]})


def secrets_readable(objs: Objs) -> None:
    role(objs)["rules"].append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]})


def attach_without_get(objs: Objs) -> None:
    role(objs)["rules"][2]["verbs"] = ["create"]


def cluster_role(objs: Objs) -> None:
    objs.append(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "x"},
            "rules": [],
        }
    )


def bound_to_default_sa(objs: Objs) -> None:
    rb = one(objs, "RoleBinding", checks.JUPYTER, checks.SANDBOX_NS)
    rb["subjects"].append({"kind": "ServiceAccount", "name": "default", "namespace": "default"})


def proxy_gets_a_token(objs: Objs) -> None:
    proxy_spec(objs)["automountServiceAccountToken"] = True


RBAC_CASES: list[tuple[str, Callable[[Objs], None], str]] = [
    ("wildcard verb", wildcard_verb, "wildcard in verbs"),
    ("wildcard resource", wildcard_resource, "wildcard in resources"),
    ("secrets", secrets_readable, "core/secrets: extra verbs ['get']"),
    ("attach without get", attach_without_get, "core/pods/attach: missing verbs ['get']"),
    ("cluster role", cluster_role, "ClusterRole/x: no cluster-wide RBAC"),
    ("extra subject", bound_to_default_sa, "subjects must be exactly"),
    ("proxy token", proxy_gets_a_token, "automountServiceAccountToken must be False"),
]


@pytest.mark.parametrize(("case", "breaks", "expected"), RBAC_CASES)
def test_rbac_catches(
    k3s: Rendered, case: str, breaks: Callable[[Objs], None], expected: str
) -> None:
    objs = copy.deepcopy(k3s.objs)
    breaks(objs)
    violations = checks.check_rbac(objs)
    assert any(expected in v for v in violations), violations


# ------------------------------------------------------------------ network
def sandbox_egress(objs: Objs) -> dict[str, Any]:
    return one(objs, "NetworkPolicy", "sandbox-egress", checks.SANDBOX_NS)


def sandboxes_to_the_world(objs: Objs) -> None:
    sandbox_egress(objs)["spec"]["egress"].append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]})


def sandboxes_to_any_pod_on_8787(objs: Objs) -> None:
    # Forgetting the podSelector (and the port): every pod in claude-pods, so the
    # Jupyter server, whose ingress is open on 8888, becomes reachable from sandboxes.
    rule = sandbox_egress(objs)["spec"]["egress"][0]
    rule["to"][0].pop("podSelector")
    rule["ports"] = []


def dns_peer_unrestricted(objs: Objs) -> None:
    # "DNS" written as port 53 to anywhere: any resolver, any tunnel over UDP 53.
    sandbox_egress(objs)["spec"]["egress"][1].pop("to")


def no_default_deny(objs: Objs) -> None:
    objs.remove(one(objs, "NetworkPolicy", "default-deny", checks.SANDBOX_NS))


def proxy_policy_label_typo(objs: Objs) -> None:
    policy = one(objs, "NetworkPolicy", checks.PROXY, checks.NS)
    policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] = "claude-pod-proxy"


def proxy_ingress_from_anywhere(objs: Objs) -> None:
    one(objs, "NetworkPolicy", checks.PROXY, checks.NS)["spec"]["ingress"][0].pop("from")


def proxy_egress_to_lan(objs: Objs) -> None:
    rule = one(objs, "NetworkPolicy", checks.PROXY, checks.NS)["spec"]["egress"][1]
    rule["to"][0]["ipBlock"]["except"] = []


NETWORK_CASES: list[tuple[str, Callable[[Objs], None], str]] = [
    ("0.0.0.0/0", sandboxes_to_the_world, "sandbox -> internet:443/TCP is allowed"),
    ("no podSelector", sandboxes_to_any_pod_on_8787, "sandbox -> jupyter:8888/TCP is allowed"),
    ("dns anywhere", dns_peer_unrestricted, "sandbox -> internet:53/UDP is allowed"),
    ("no default deny", no_default_deny, "default-deny (ingress and egress, all pods) missing"),
    ("no default deny", no_default_deny, "other -> sandbox:8080/TCP is allowed"),
    ("typo", proxy_policy_label_typo, "sandbox -> proxy:8787/TCP is denied"),
    ("proxy open", proxy_ingress_from_anywhere, "other -> proxy:8787/TCP is allowed"),
    ("proxy to lan", proxy_egress_to_lan, "proxy -> lan:443/TCP is allowed"),
]


@pytest.mark.parametrize(("case", "breaks", "expected"), NETWORK_CASES)
def test_network_catches(
    k3s: Rendered, case: str, breaks: Callable[[Objs], None], expected: str
) -> None:
    objs = copy.deepcopy(k3s.objs)
    breaks(objs)
    violations = checks.check_network(objs, k3s.pod, ingress=False)
    assert any(expected in v for v in violations), violations


def test_network_catches_sandbox_labels_the_policies_miss(k3s: Rendered) -> None:
    """If policies selected sandboxes by a label the server stopped setting, the real
    pod labels (from make_pod) would fall outside them."""
    objs = copy.deepcopy(k3s.objs)
    for name in ("default-deny", "sandbox-egress"):
        selector = one(objs, "NetworkPolicy", name, checks.SANDBOX_NS)["spec"]
        selector["podSelector"] = {"matchLabels": {"app": "claudecode-sandbox"}}
    violations = checks.check_network(objs, k3s.pod, ingress=False)
    assert any("sandbox -> internet:443/TCP is allowed" in v for v in violations), violations


# ------------------------------------------------------------------ secrets, images, pods
def key_in_jupyter(objs: Objs) -> None:
    spec = jupyter_spec(objs)
    spec["volumes"].append({"name": "key", "secret": {"secretName": checks.ANTHROPIC_SECRET}})


def key_as_env(objs: Objs) -> None:
    c = proxy_spec(objs)["containers"][0]
    c["env"].append(
        {
            "name": "ANTHROPIC_API_KEY",
            "valueFrom": {"secretKeyRef": {"name": checks.ANTHROPIC_SECRET, "key": "api-key"}},
        }
    )


def key_file_path_wrong(objs: Objs) -> None:
    for env in proxy_spec(objs)["containers"][0]["env"]:
        if env["name"] == "CLAUDE_PODS_KEY_FILE":
            env["value"] = "/var/run/secrets/anthropic/api-key"


def secret_in_sandbox_ns(objs: Objs) -> None:
    secret = copy.deepcopy(one(objs, "Secret", checks.TOKEN_SECRET, checks.NS))
    secret["metadata"]["namespace"] = checks.SANDBOX_NS
    objs.append(secret)


SECRET_CASES: list[tuple[str, Callable[[Objs], None], str]] = [
    ("jupyter mounts the key", key_in_jupyter, "must read exactly Secret"),
    ("jupyter mounts the key", key_in_jupyter, "must be read by claude-pods-proxy only"),
    ("key as env", key_as_env, "the key must not be an env var"),
    ("wrong file", key_file_path_wrong, "CLAUDE_PODS_KEY_FILE="),
    ("secret in sandbox ns", secret_in_sandbox_ns, "Secrets belong in claude-pods only"),
]


@pytest.mark.parametrize(("case", "breaks", "expected"), SECRET_CASES)
def test_secrets_catch(
    k3s: Rendered, case: str, breaks: Callable[[Objs], None], expected: str
) -> None:
    objs = copy.deepcopy(k3s.objs)
    breaks(objs)
    violations = checks.check_secrets(objs)
    assert any(expected in v for v in violations), violations


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("localhost/claude-pods-proxy:latest", "uses :latest"),
        ("localhost/claude-pods-proxy", "has no tag"),
        ("localhost:5000/claude-pods-proxy", "has no tag"),  # a registry port is not a tag
        ("docker.io/library/python:3.12", "is not one of"),
        ("localhost/claude-pods-proxy:0.0.9", "is not one of"),
    ],
)
def test_images_catch(k3s: Rendered, image: str, expected: str) -> None:
    objs = copy.deepcopy(k3s.objs)
    proxy_spec(objs)["containers"][0]["image"] = image
    b = k3s.settings.backend
    violations = checks.check_images(objs, b.image, b.image_pull_policy)
    assert any(expected in v for v in violations), violations


def test_images_catch_sandbox_image_and_pull_policy(k3s: Rendered) -> None:
    violations = checks.check_images(k3s.objs, "localhost/claude-pods-sandbox:latest", "Always")
    assert any("KubernetesBackend.image: image" in v and ":latest" in v for v in violations)
    assert any("imagePullPolicy 'Always'" in v for v in violations), violations


def privilege_escalation(objs: Objs) -> None:
    proxy_spec(objs)["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True


def root_init_container(objs: Objs) -> None:
    jupyter_spec(objs)["initContainers"][0]["securityContext"]["runAsUser"] = 0


def caps_kept(objs: Objs) -> None:
    jupyter_spec(objs)["containers"][0]["securityContext"]["capabilities"] = {"drop": ["NET_RAW"]}


def writable_root(objs: Objs) -> None:
    jupyter_spec(objs)["containers"][0]["securityContext"].pop("readOnlyRootFilesystem")


def host_path(objs: Objs) -> None:
    proxy_spec(objs)["volumes"].append({"name": "h", "hostPath": {"path": "/"}})


def no_limits(objs: Objs) -> None:
    proxy_spec(objs)["containers"][0]["resources"].pop("limits")


def no_probe(objs: Objs) -> None:
    jupyter_spec(objs)["containers"][0].pop("readinessProbe")


POD_CASES: list[tuple[str, Callable[[Objs], None], str]] = [
    ("escalation", privilege_escalation, 'container "proxy": allowPrivilegeEscalation'),
    ("root", root_init_container, 'initContainer "prepare-data": runAsUser must not be 0'),
    ("caps", caps_kept, 'capabilities.drop must include "ALL"'),
    ("writable root", writable_root, "readOnlyRootFilesystem must be true"),
    ("hostPath", host_path, "type hostPath is not allowed"),
    ("limits", no_limits, "limits.cpu missing"),
    ("probe", no_probe, "readinessProbe missing"),
]


@pytest.mark.parametrize(("case", "breaks", "expected"), POD_CASES)
def test_pod_security_catches(
    k3s: Rendered, case: str, breaks: Callable[[Objs], None], expected: str
) -> None:
    objs = copy.deepcopy(k3s.objs)
    breaks(objs)
    violations = checks.check_pod_security(objs)
    assert any(expected in v for v in violations), violations


def test_sandbox_pod_catches_a_secret_and_a_writable_course(k3s: Rendered) -> None:
    pod = copy.deepcopy(k3s.pod)
    pod["spec"]["volumes"].append({"name": "s", "secret": {"secretName": checks.TOKEN_SECRET}})
    courses = next(v for v in pod["spec"]["volumes"] if v["name"] == "courses")
    courses["persistentVolumeClaim"]["readOnly"] = False
    violations = checks.check_sandbox_pod(k3s.objs, pod)
    assert any("secret volumes are not allowed" in v for v in violations), violations
    assert any("reads Secrets ['claude-pods-token-secret']" in v for v in violations)
    assert any("must be read-only" in v for v in violations), violations


def test_sandbox_pod_catches_privilege_and_wrong_namespace(k3s: Rendered) -> None:
    pod = copy.deepcopy(k3s.pod)
    pod["spec"]["containers"][0]["securityContext"]["privileged"] = True
    pod["metadata"]["namespace"] = "default"
    violations = checks.check_sandbox_pod(k3s.objs, pod)
    assert any("privileged must not be true" in v for v in violations), violations
    assert any("is not the rendered" in v for v in violations), violations


# ------------------------------------------------------------------ the rest
def test_namespace_catches_baseline(k3s: Rendered) -> None:
    objs = copy.deepcopy(k3s.objs)
    labels = one(objs, "Namespace", checks.SANDBOX_NS)["metadata"]["labels"]
    labels["pod-security.kubernetes.io/enforce"] = "baseline"
    assert checks.check_namespaces(objs) == [
        "Namespace/claude-pods-sandboxes: pod-security.kubernetes.io/enforce must be restricted"
    ]


def test_services_catch_other_node_port_and_exposed_proxy(k3s: Rendered) -> None:
    objs = copy.deepcopy(k3s.objs)
    one(objs, "Service", checks.JUPYTER, checks.NS)["spec"]["ports"][0]["nodePort"] = 30000
    one(objs, "Service", checks.PROXY, checks.NS)["spec"]["type"] = "NodePort"
    violations = checks.check_services(objs, ingress=False)
    assert "Service/claude-pods/claude-pods-jupyter: nodePort must be 31000" in violations
    assert "Service/claude-pods/claude-pods-proxy: type must be ClusterIP" in violations


def test_services_catch_a_selector_that_selects_nothing(k3s: Rendered) -> None:
    objs = copy.deepcopy(k3s.objs)
    one(objs, "Service", checks.PROXY, checks.NS)["spec"]["selector"] = {"app": "proxy"}
    violations = checks.check_services(objs, ingress=False)
    assert any("selector does not select" in v for v in violations), violations


def test_quota_catches_a_cap_above_the_quota(k3s: Rendered) -> None:
    cap = k3s.settings.manager.max_sandboxes
    assert checks.check_quota(k3s.objs, k3s.pod, cap) == []
    violations = checks.check_quota(k3s.objs, k3s.pod, cap + 5)
    assert any("pods=30 is below" in v for v in violations), violations
    objs = copy.deepcopy(k3s.objs)
    limit_range = one(objs, "LimitRange", "sandboxes", checks.SANDBOX_NS)
    limit_range["spec"]["limits"][0]["max"]["memory"] = "1Gi"
    violations = checks.check_quota(objs, k3s.pod, cap)
    assert any("limit memory over max 1Gi" in v for v in violations), violations


def test_schema_catches_unknown_fields_and_bad_quantities(k3s: Rendered) -> None:
    objs = copy.deepcopy(k3s.objs)
    proxy_spec(objs)["containers"][0]["bogusField"] = True
    one(objs, "ResourceQuota", "sandboxes", checks.SANDBOX_NS)["spec"]["hard"]["pods"] = "lots"
    violations = checks.check_schema(objs)
    assert any("bogusField" in v for v in violations), violations
    assert any("'lots' is not a quantity" in v for v in violations), violations


def test_config_catches_a_misspelt_option_and_a_wrong_value(k3s: Rendered, tmp_path: Path) -> None:
    objs = copy.deepcopy(k3s.objs)
    config_map = one(objs, "ConfigMap", checks.CONFIG_MAP, checks.NS)
    config_map["data"]["overlay.json"] = (
        '{"KubernetesBackend": {"namespce": "x", "namespace": "default"}}'
    )
    settings = checks.load_settings(checks.jupyter_config(objs, tmp_path))
    violations = checks.check_config(objs, settings)
    assert "config: KubernetesBackend.namespce is not an option" in violations
    assert any("KubernetesBackend.namespace is 'default'" in v for v in violations), violations


def test_config_catches_a_mount_jupyter_does_not_read(k3s: Rendered, tmp_path: Path) -> None:
    """The ConfigMap mounted where Jupyter does not look: the contract's settings vanish."""
    objs = copy.deepcopy(k3s.objs)
    for mount in jupyter_spec(objs)["containers"][0]["volumeMounts"]:
        if mount["name"] == "config":
            mount["mountPath"] = "/opt/jupyter-config"
    config = checks.jupyter_config(objs, tmp_path)
    assert "KubernetesBackend" not in config


def test_storage_catches_a_one_sided_binding_and_a_missing_claim(k3s: Rendered) -> None:
    objs = copy.deepcopy(k3s.objs)
    pvc = one(objs, "PersistentVolumeClaim", checks.COURSES_PVC, checks.SANDBOX_NS)
    pvc["spec"]["volumeName"] = "claude-pods-courses"  # the other namespace's volume
    objs.remove(one(objs, "PersistentVolumeClaim", "claude-pods-proxy-data", checks.NS))
    violations = checks.check_storage(objs, k3s.settings)
    assert any("not bound both ways" in v for v in violations), violations
    assert any("claim claude-pods-proxy-data does not exist" in v for v in violations)


def test_a_broken_overlay_fails_to_render(tmp_path: Path) -> None:
    root = prepare(tmp_path / "manifests")
    (root / "overlays" / "k3s" / "secrets" / "token-secret").unlink()
    with pytest.raises(RuntimeError, match="token-secret"):
        kustomize(root / "overlays" / "k3s")


def test_labels_catch_an_unlabelled_object(k3s: Rendered) -> None:
    objs = copy.deepcopy(k3s.objs)
    del one(objs, "Role", checks.ROLE, checks.SANDBOX_NS)["metadata"]["labels"]
    assert checks.check_labels(objs) == [
        (
            "Role/claude-pods-sandboxes/claude-pods-sandboxes: label "
            "app.kubernetes.io/part-of=jupyter-claude-pods missing"
        )
    ]


def test_services_catch_an_ingress_without_tls(rendered: dict[str, Rendered]) -> None:
    objs = copy.deepcopy(rendered["k3s-ingress"].objs)
    assert checks.check_services(objs, ingress=True) == []
    one(objs, "Ingress", checks.JUPYTER, checks.NS)["spec"].pop("tls")
    assert checks.check_services(objs, ingress=True) == [
        "Ingress/claude-pods/claude-pods-jupyter: must terminate TLS with a Secret"
    ]
    # and the NodePort left open next to the Ingress
    svc = one(objs, "Service", checks.JUPYTER, checks.NS)
    svc["spec"]["type"] = "NodePort"
    assert "Service/claude-pods/claude-pods-jupyter: type must be ClusterIP" in (
        checks.check_services(objs, ingress=True)
    )
