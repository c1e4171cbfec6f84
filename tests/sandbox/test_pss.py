"""The offline PSS "restricted" and hardening checkers catch each violation on its own.

Each case mutates the pod our builder makes (which passes both checkers, see the first
tests) in exactly one way and expects exactly the message(s) for that one rule, so a
checker that stopped looking at a field fails its own test.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from jupyter_claude_pods.sandbox.kubernetes.objects import make_pod
from jupyter_claude_pods.sandbox.kubernetes.options import PodOptions
from jupyter_claude_pods.sandbox.kubernetes.pss import (
    hardening_violations,
    restricted_violations,
    restricted_violations_spec,
)
from jupyter_claude_pods.sandbox.spec import SandboxSpec

Pod = dict[str, Any]
C = 'container "sandbox"'


def good_pod() -> Pod:
    spec = SandboxSpec(session_id="s1", user="alice", terminal="1")
    options = PodOptions(namespace="ns", image="example/sandbox:1", instance="i")
    return make_pod(spec, options)


def pod_sc(pod: Pod) -> dict[str, Any]:
    sc: dict[str, Any] = pod["spec"]["securityContext"]
    return sc


def ctr(pod: Pod) -> dict[str, Any]:
    c: dict[str, Any] = pod["spec"]["containers"][0]
    return c


def ctr_sc(pod: Pod) -> dict[str, Any]:
    sc: dict[str, Any] = ctr(pod)["securityContext"]
    return sc


def add_init_container(pod: Pod, **security_context: Any) -> dict[str, Any]:
    """Add a copy of the good container as an init container; return it to mutate."""
    init = copy.deepcopy(ctr(pod))
    init["name"] = "init"
    init["securityContext"].update(security_context)
    pod["spec"]["initContainers"] = [init]
    return init


def add_bare_ephemeral_container(pod: Pod) -> None:
    """What `kubectl debug` adds, in a pod without pod-level settings to inherit."""
    pod_sc(pod).clear()
    pod["spec"]["ephemeralContainers"] = [{"name": "debug", "image": "busybox"}]


def add_volume(pod: Pod, volume: dict[str, Any]) -> None:
    pod["spec"]["volumes"].append(volume)


# Mutates the pod in place; the return value is ignored.
Mutation = Callable[[Pod], object]

# (id, mutation, exact expected restricted violations)
RESTRICTED_CASES: list[tuple[str, Mutation, list[str]]] = [
    (
        "privileged",
        lambda p: ctr_sc(p).update(privileged=True),
        [f"{C}: privileged must not be true"],
    ),
    (
        "hostNetwork",
        lambda p: p["spec"].update(hostNetwork=True),
        ["pod: hostNetwork must not be true"],
    ),
    ("hostPID", lambda p: p["spec"].update(hostPID=True), ["pod: hostPID must not be true"]),
    ("hostIPC", lambda p: p["spec"].update(hostIPC=True), ["pod: hostIPC must not be true"]),
    (
        "hostPath volume",
        lambda p: add_volume(p, {"name": "host", "hostPath": {"path": "/"}}),
        ['volume "host": type hostPath is not allowed'],
    ),
    (
        "nfs volume",
        lambda p: add_volume(p, {"name": "share", "nfs": {"server": "nfs", "path": "/"}}),
        ['volume "share": type nfs is not allowed'],
    ),
    (
        "capabilities add SYS_ADMIN",
        lambda p: ctr_sc(p)["capabilities"].update(add=["NET_BIND_SERVICE", "SYS_ADMIN"]),
        [f"{C}: capabilities.add must not include SYS_ADMIN"],
    ),
    (
        "capabilities add NET_RAW (baseline default set, not restricted)",
        lambda p: ctr_sc(p)["capabilities"].update(add=["NET_RAW"]),
        [f"{C}: capabilities.add must not include NET_RAW"],
    ),
    (
        "drop without ALL",
        lambda p: ctr_sc(p)["capabilities"].update(drop=["NET_RAW"]),
        [f'{C}: capabilities.drop must include "ALL"'],
    ),
    (
        "no capabilities",
        lambda p: ctr_sc(p).pop("capabilities"),
        [f'{C}: capabilities.drop must include "ALL"'],
    ),
    (
        "seccomp Unconfined on container",
        lambda p: ctr_sc(p).update(seccompProfile={"type": "Unconfined"}),
        [f"{C}: seccomp profile type 'Unconfined' is not allowed"],
    ),
    (
        "seccomp Unconfined on pod, container unset",
        lambda p: (
            pod_sc(p).update(seccompProfile={"type": "Unconfined"}),
            ctr_sc(p).pop("seccompProfile"),
        ),
        [
            "pod: seccomp profile type 'Unconfined' is not allowed",
            f"{C}: seccompProfile.type must be RuntimeDefault or Localhost (here or at pod level)",
        ],
    ),
    (
        "seccomp missing everywhere",
        lambda p: (pod_sc(p).pop("seccompProfile"), ctr_sc(p).pop("seccompProfile")),
        [f"{C}: seccompProfile.type must be RuntimeDefault or Localhost (here or at pod level)"],
    ),
    ("pod runAsUser 0", lambda p: pod_sc(p).update(runAsUser=0), ["pod: runAsUser must not be 0"]),
    (
        "container runAsUser 0",
        lambda p: ctr_sc(p).update(runAsUser=0),
        [f"{C}: runAsUser must not be 0"],
    ),
    (
        "runAsNonRoot missing everywhere",
        lambda p: (pod_sc(p).pop("runAsNonRoot"), ctr_sc(p).pop("runAsNonRoot")),
        [f"{C}: runAsNonRoot must be true (here or at pod level)"],
    ),
    (
        "container runAsNonRoot false under pod true",
        lambda p: ctr_sc(p).update(runAsNonRoot=False),
        [f"{C}: runAsNonRoot must not be false"],
    ),
    (
        "pod runAsNonRoot false, container true",
        lambda p: pod_sc(p).update(runAsNonRoot=False),
        ["pod: runAsNonRoot must not be false"],
    ),
    (
        "allowPrivilegeEscalation true",
        lambda p: ctr_sc(p).update(allowPrivilegeEscalation=True),
        [f"{C}: allowPrivilegeEscalation must be false"],
    ),
    (
        "allowPrivilegeEscalation missing",
        lambda p: ctr_sc(p).pop("allowPrivilegeEscalation"),
        [f"{C}: allowPrivilegeEscalation must be false"],
    ),
    (
        "unsafe sysctl",
        lambda p: pod_sc(p).update(sysctls=[{"name": "kernel.msgmax", "value": "1"}]),
        ["pod: sysctl 'kernel.msgmax' is not in the safe set"],
    ),
    (
        "sysctl added only in v1.37",
        lambda p: pod_sc(p).update(sysctls=[{"name": "net.ipv4.tcp_notsent_lowat", "value": "1"}]),
        ["pod: sysctl 'net.ipv4.tcp_notsent_lowat' is not in the safe set"],
    ),
    (
        "hostPort",
        lambda p: ctr(p).update(ports=[{"containerPort": 80, "hostPort": 8080}]),
        [f"{C}: hostPort 8080 is not allowed"],
    ),
    (
        "AppArmor Unconfined on pod",
        lambda p: pod_sc(p).update(appArmorProfile={"type": "Unconfined"}),
        ["pod: AppArmor profile type 'Unconfined' is not allowed"],
    ),
    (
        "AppArmor Unconfined on container",
        lambda p: ctr_sc(p).update(appArmorProfile={"type": "Unconfined"}),
        [f"{C}: AppArmor profile type 'Unconfined' is not allowed"],
    ),
    (
        "AppArmor unconfined annotation",
        lambda p: p["metadata"]["annotations"].update(
            {"container.apparmor.security.beta.kubernetes.io/sandbox": "unconfined"}
        ),
        [
            (
                "annotation container.apparmor.security.beta.kubernetes.io/sandbox: "
                "AppArmor profile 'unconfined' is not allowed"
            )
        ],
    ),
    (
        "SELinux type spc_t",
        lambda p: ctr_sc(p).update(seLinuxOptions={"type": "spc_t"}),
        [f"{C}: seLinuxOptions.type 'spc_t' is not allowed"],
    ),
    (
        "SELinux user and role on pod",
        lambda p: pod_sc(p).update(seLinuxOptions={"user": "system_u", "role": "system_r"}),
        ["pod: seLinuxOptions.user must not be set", "pod: seLinuxOptions.role must not be set"],
    ),
    (
        "procMount Unmasked",
        lambda p: ctr_sc(p).update(procMount="Unmasked"),
        [f"{C}: procMount must be Default"],
    ),
    (
        "Windows hostProcess",
        lambda p: ctr_sc(p).update(windowsOptions={"hostProcess": True}),
        [f"{C}: windowsOptions.hostProcess must not be true"],
    ),
    (
        "probe host",
        lambda p: ctr(p).update(
            livenessProbe={"httpGet": {"host": "10.0.0.1", "port": 80, "path": "/"}}
        ),
        [f"{C}: probe or lifecycle host '10.0.0.1' is not allowed"],
    ),
    (
        "lifecycle host",
        lambda p: ctr(p).update(lifecycle={"preStop": {"tcpSocket": {"host": "node", "port": 1}}}),
        [f"{C}: probe or lifecycle host 'node' is not allowed"],
    ),
    (
        "initContainer privileged",
        lambda p: add_init_container(p, privileged=True),
        ['initContainer "init": privileged must not be true'],
    ),
    (
        "initContainer allowPrivilegeEscalation true",
        lambda p: add_init_container(p, allowPrivilegeEscalation=True),
        ['initContainer "init": allowPrivilegeEscalation must be false'],
    ),
    (
        "initContainer hostPort",
        lambda p: add_init_container(p).update(ports=[{"containerPort": 1, "hostPort": 1}]),
        ['initContainer "init": hostPort 1 is not allowed'],
    ),
    (
        "initContainer without securityContext",
        lambda p: add_init_container(p).pop("securityContext"),
        [
            'initContainer "init": allowPrivilegeEscalation must be false',
            'initContainer "init": capabilities.drop must include "ALL"',
        ],
    ),
    (
        "ephemeralContainer without securityContext, pod-level settings gone",
        add_bare_ephemeral_container,
        [
            'ephemeralContainer "debug": allowPrivilegeEscalation must be false',
            'ephemeralContainer "debug": capabilities.drop must include "ALL"',
            'ephemeralContainer "debug": runAsNonRoot must be true (here or at pod level)',
            (
                'ephemeralContainer "debug": seccompProfile.type must be RuntimeDefault'
                " or Localhost (here or at pod level)"
            ),
        ],
    ),
]


def test_the_good_pod_has_no_violations() -> None:
    pod = good_pod()
    assert restricted_violations(pod) == []
    assert hardening_violations(pod) == []


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [pytest.param(m, e, id=i) for i, m, e in RESTRICTED_CASES],
)
def test_restricted_catches(mutate: Mutation, expected: list[str]) -> None:
    pod = good_pod()
    mutate(pod)
    assert restricted_violations(pod) == expected


ALLOWED_CASES: list[tuple[str, Mutation]] = [
    ("add NET_BIND_SERVICE", lambda p: ctr_sc(p)["capabilities"].update(add=["NET_BIND_SERVICE"])),
    ("seccomp only on the container", lambda p: pod_sc(p).pop("seccompProfile")),
    ("seccomp only on the pod", lambda p: ctr_sc(p).pop("seccompProfile")),
    (
        "seccomp Localhost",
        lambda p: ctr_sc(p).update(
            seccompProfile={"type": "Localhost", "localhostProfile": "p.json"}
        ),
    ),
    ("runAsNonRoot only on the pod", lambda p: ctr_sc(p).pop("runAsNonRoot")),
    (
        "runAsNonRoot only on the container",
        lambda p: pod_sc(p).pop("runAsNonRoot"),
    ),
    (
        "safe sysctl",
        lambda p: pod_sc(p).update(sysctls=[{"name": "net.ipv4.tcp_syncookies", "value": "1"}]),
    ),
    ("hostPort 0", lambda p: ctr(p).update(ports=[{"containerPort": 80, "hostPort": 0}])),
    (
        "AppArmor RuntimeDefault",
        lambda p: ctr_sc(p).update(appArmorProfile={"type": "RuntimeDefault"}),
    ),
    (
        "AppArmor localhost annotation",
        lambda p: p["metadata"]["annotations"].update(
            {"container.apparmor.security.beta.kubernetes.io/sandbox": "localhost/prof"}
        ),
    ),
    ("SELinux container_t", lambda p: ctr_sc(p).update(seLinuxOptions={"type": "container_t"})),
    ("procMount Default", lambda p: ctr_sc(p).update(procMount="Default")),
    ("probe without host", lambda p: ctr(p).update(readinessProbe={"tcpSocket": {"port": 80}})),
    (
        "allowed volume types",
        lambda p: p["spec"]["volumes"].extend(
            [
                {"name": "cm", "configMap": {"name": "x"}},
                {"name": "pvc", "persistentVolumeClaim": {"claimName": "x"}},
                {"name": "img", "image": {"reference": "example/data:1"}},
            ]
        ),
    ),
]


@pytest.mark.parametrize("mutate", [pytest.param(m, id=i) for i, m in ALLOWED_CASES])
def test_restricted_allows(mutate: Mutation) -> None:
    pod = good_pod()
    mutate(pod)
    assert restricted_violations(pod) == []


def test_spec_variant_checks_a_deployment_template() -> None:
    template = copy.deepcopy(good_pod())
    template["spec"]["hostNetwork"] = True
    deployment = {
        "spec": {"template": {"metadata": template["metadata"], "spec": template["spec"]}}
    }
    tpl = deployment["spec"]["template"]
    assert restricted_violations_spec(tpl["spec"], tpl["metadata"].get("annotations")) == [
        "pod: hostNetwork must not be true"
    ]
    assert restricted_violations_spec(good_pod()["spec"]) == []


def test_empty_or_malformed_input_does_not_crash() -> None:
    assert restricted_violations({}) == []
    assert restricted_violations({"spec": None, "metadata": None}) == []
    bad = {"spec": {"containers": [{"name": "x", "securityContext": None}]}}
    assert 'container "x": allowPrivilegeEscalation must be false' in restricted_violations(bad)


# --- hardening -------------------------------------------------------------------

HARDENING_CASES: list[tuple[str, Mutation, list[str]]] = [
    (
        "automount token unset",
        lambda p: p["spec"].pop("automountServiceAccountToken"),
        ["pod: automountServiceAccountToken must be false"],
    ),
    (
        "service links on",
        lambda p: p["spec"].update(enableServiceLinks=True),
        ["pod: enableServiceLinks must be false"],
    ),
    (
        "restartPolicy Always",
        lambda p: p["spec"].update(restartPolicy="Always"),
        ["pod: restartPolicy must be Never"],
    ),
    (
        "writable root",
        lambda p: ctr_sc(p).update(readOnlyRootFilesystem=False),
        [f"{C}: readOnlyRootFilesystem must be true"],
    ),
    (
        "no cpu limit",
        lambda p: ctr(p)["resources"]["limits"].pop("cpu"),
        [f"{C}: resources.limits.cpu must be set"],
    ),
    (
        "no memory limit",
        lambda p: ctr(p)["resources"]["limits"].pop("memory"),
        [f"{C}: resources.limits.memory must be set"],
    ),
    (
        "secret volume",
        lambda p: add_volume(p, {"name": "s", "secret": {"secretName": "key"}}),
        ['volume "s": secret volumes are not allowed'],
    ),
    (
        "projected secret and token",
        lambda p: add_volume(
            p,
            {
                "name": "pr",
                "projected": {
                    "sources": [
                        {"secret": {"name": "key"}},
                        {"serviceAccountToken": {"path": "token"}},
                    ]
                },
            },
        ),
        [
            'volume "pr": projected secret is not allowed',
            'volume "pr": projected serviceAccountToken is not allowed',
        ],
    ),
    (
        "emptyDir without sizeLimit",
        lambda p: add_volume(p, {"name": "e", "emptyDir": {}}),
        ['volume "e": emptyDir must set sizeLimit'],
    ),
    (
        "envFrom secretRef",
        lambda p: ctr(p).update(envFrom=[{"secretRef": {"name": "key"}}]),
        [f"{C}: envFrom secretRef is not allowed"],
    ),
    (
        "env secretKeyRef",
        lambda p: ctr(p)["env"].append(
            {"name": "K", "valueFrom": {"secretKeyRef": {"name": "key", "key": "k"}}}
        ),
        [f"{C}: env K must not come from a secretKeyRef"],
    ),
    (
        "initContainer without limits or read-only root",
        lambda p: add_init_container(p, readOnlyRootFilesystem=False).pop("resources"),
        [
            'initContainer "init": readOnlyRootFilesystem must be true',
            'initContainer "init": resources.limits.cpu must be set',
            'initContainer "init": resources.limits.memory must be set',
        ],
    ),
]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [pytest.param(m, e, id=i) for i, m, e in HARDENING_CASES],
)
def test_hardening_catches(mutate: Mutation, expected: list[str]) -> None:
    pod = good_pod()
    mutate(pod)
    assert hardening_violations(pod) == expected
