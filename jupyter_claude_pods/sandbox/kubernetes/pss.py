"""An offline checker of the Pod Security Standards "restricted" profile.

Why our own: the namespace enforces ``pod-security.kubernetes.io/enforce=restricted``,
and a pod that fails it is only rejected at create time in the cluster. Checking the
manifests we build in unit tests catches a regression before it reaches a cluster,
and the same checks apply to the Deployments under ``manifests/`` via
:func:`restricted_violations_spec`.

The rules follow ``k8s.io/pod-security-admission/policy`` (the code behind the
standard; k8s docs: "Pod Security Standards") at version **v1.34**, which is also
"latest" for the clusters we target. Two deliberate differences, both stricter:

* no exemption for Windows pods (``spec.os.name: windows`` skips the seccomp,
  capabilities and allowPrivilegeEscalation checks upstream); sandboxes are Linux;
* no relaxation for user-namespaced pods (``hostUsers: false``): upstream only
  relaxes runAsNonRoot, runAsUser and procMount from v1.35 on.

:func:`hardening_violations` adds the rules the standard does not cover but our
sandbox relies on (read-only root, no API token, no Secrets, bounded resources).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

# Inline volume sources "restricted" allows (policy/check_restrictedVolumes.go).
ALLOWED_VOLUME_TYPES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "image",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
# Namespaced, node-isolated sysctls (policy/check_sysctls.go, v1.32 set; v1.37
# adds tcp_slow_start_after_idle and tcp_notsent_lowat).
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
        "net.ipv4.tcp_rmem",
        "net.ipv4.tcp_wmem",
    }
)
# policy/check_seLinuxOptions.go (container_engine_t since v1.31).
ALLOWED_SELINUX_TYPES = frozenset(
    {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
)
_GOOD_PROFILE_TYPES = frozenset({"RuntimeDefault", "Localhost"})
_APPARMOR_ANNOTATION_PREFIX = "container.apparmor.security.beta.kubernetes.io/"

# (field in the pod spec, word used in messages)
_CONTAINER_KINDS = (
    ("initContainers", "initContainer"),
    ("containers", "container"),
    ("ephemeralContainers", "ephemeralContainer"),
)


def _map(value: Any) -> Mapping[str, Any]:
    # Manifests are user data: a missing or null field reads as empty.
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _containers(spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """``(label, container)`` for every container kind, like upstream's visitContainers."""
    for field, word in _CONTAINER_KINDS:
        for container in _list(spec.get(field)):
            c = _map(container)
            yield f'{word} "{c.get("name", "?")}"', c


def _check_host_namespaces(spec: Mapping[str, Any]) -> Iterator[str]:
    # Baseline "Host Namespaces".
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field) is True:
            yield f"pod: {field} must not be true"


def _check_pod_security_context(spec: Mapping[str, Any]) -> Iterator[str]:
    sc = _map(spec.get("securityContext"))
    # Baseline "Sysctls": only the safe set, which cannot affect other pods.
    for sysctl in _list(sc.get("sysctls")):
        name = _map(sysctl).get("name")
        if name not in SAFE_SYSCTLS:
            yield f"pod: sysctl {name!r} is not in the safe set"
    # Restricted "Running as Non-root user": 0 is root whatever the image says.
    if sc.get("runAsUser") == 0:
        yield "pod: runAsUser must not be 0"
    if sc.get("runAsNonRoot") is False:
        yield "pod: runAsNonRoot must not be false"
    yield from _check_profiles("pod", sc)
    yield from _check_selinux("pod", sc)
    if _map(sc.get("windowsOptions")).get("hostProcess") is True:
        yield "pod: windowsOptions.hostProcess must not be true"


def _check_profiles(who: str, sc: Mapping[str, Any]) -> Iterator[str]:
    """Explicitly bad seccomp and AppArmor profiles (Baseline "AppArmor", Restricted
    "Seccomp"): Unconfined, or anything but RuntimeDefault/Localhost, is forbidden."""
    for field, what in (("seccompProfile", "seccomp"), ("appArmorProfile", "AppArmor")):
        if field in sc and sc[field] is not None:
            kind = _map(sc[field]).get("type")
            if kind not in _GOOD_PROFILE_TYPES:
                yield f"{who}: {what} profile type {kind!r} is not allowed"


def _check_selinux(who: str, sc: Mapping[str, Any]) -> Iterator[str]:
    # Baseline "SELinux": custom user/role or an unexpected type escapes confinement.
    opts = sc.get("seLinuxOptions")
    if opts is None:
        return
    opts = _map(opts)
    if opts.get("type", "") not in ALLOWED_SELINUX_TYPES:
        yield f"{who}: seLinuxOptions.type {opts.get('type')!r} is not allowed"
    for field in ("user", "role"):
        if opts.get(field):
            yield f"{who}: seLinuxOptions.{field} must not be set"


def _host_fields(container: Mapping[str, Any]) -> Iterator[str]:
    # Baseline "Host Probes / Lifecycle Hooks" (v1.34): a host field lets the kubelet
    # be pointed at any address from the node's network.
    handlers = [container.get(p) for p in ("livenessProbe", "readinessProbe", "startupProbe")]
    lifecycle = _map(container.get("lifecycle"))
    handlers += [lifecycle.get("postStart"), lifecycle.get("preStop")]
    for handler in handlers:
        for action in ("httpGet", "tcpSocket"):
            host = _map(_map(handler).get(action)).get("host")
            if host:
                yield host


def _check_container(who: str, c: Mapping[str, Any], pod_sc: Mapping[str, Any]) -> Iterator[str]:
    sc = _map(c.get("securityContext"))
    # Baseline "Privileged Containers".
    if sc.get("privileged") is True:
        yield f"{who}: privileged must not be true"
    # Restricted "Privilege Escalation": must be explicitly false, the default is true.
    if sc.get("allowPrivilegeEscalation") is not False:
        yield f"{who}: allowPrivilegeEscalation must be false"
    # Restricted "Capabilities": drop ALL, add back at most NET_BIND_SERVICE.
    caps = _map(sc.get("capabilities"))
    if "ALL" not in _list(caps.get("drop")):
        yield f'{who}: capabilities.drop must include "ALL"'
    added = [cap for cap in _list(caps.get("add")) if cap != "NET_BIND_SERVICE"]
    if added:
        yield f"{who}: capabilities.add must not include {', '.join(map(str, added))}"
    # Restricted "Running as Non-root": explicit false is bad even under a pod-level
    # true; unset is fine only when the pod sets true.
    if sc.get("runAsNonRoot") is False:
        yield f"{who}: runAsNonRoot must not be false"
    elif sc.get("runAsNonRoot") is None and pod_sc.get("runAsNonRoot") is not True:
        yield f"{who}: runAsNonRoot must be true (here or at pod level)"
    if sc.get("runAsUser") == 0:
        yield f"{who}: runAsUser must not be 0"
    # Restricted "Seccomp": set here, or inherited from a valid pod-level profile.
    yield from _check_profiles(who, sc)
    pod_seccomp_ok = _map(pod_sc.get("seccompProfile")).get("type") in _GOOD_PROFILE_TYPES
    if sc.get("seccompProfile") is None and not pod_seccomp_ok:
        yield f"{who}: seccompProfile.type must be RuntimeDefault or Localhost (here or at pod level)"
    yield from _check_selinux(who, sc)
    # Baseline "/proc Mount Type": the default masks hide host kernel details.
    if sc.get("procMount", "Default") not in (None, "Default"):
        yield f"{who}: procMount must be Default"
    if _map(sc.get("windowsOptions")).get("hostProcess") is True:
        yield f"{who}: windowsOptions.hostProcess must not be true"
    # Baseline "HostPorts": binding a node port bypasses NetworkPolicy.
    for port in _list(c.get("ports")):
        if _map(port).get("hostPort") not in (None, 0):
            yield f"{who}: hostPort {_map(port)['hostPort']} is not allowed"
    for host in _host_fields(c):
        yield f"{who}: probe or lifecycle host {host!r} is not allowed"


def _check_volumes(spec: Mapping[str, Any]) -> Iterator[str]:
    # Restricted "Volume Types" (which covers Baseline "HostPath Volumes"). A volume
    # with no source at all is defaulted to emptyDir by the API server.
    for volume in _list(spec.get("volumes")):
        v = _map(volume)
        for kind in sorted(set(v) - {"name"} - ALLOWED_VOLUME_TYPES):
            yield f'volume "{v.get("name", "?")}": type {kind} is not allowed'


def _check_apparmor_annotations(annotations: Mapping[str, Any]) -> Iterator[str]:
    # Baseline "AppArmor", pre-1.30 form still honoured by the kubelet.
    for key, value in sorted(annotations.items()):
        if not str(key).startswith(_APPARMOR_ANNOTATION_PREFIX):
            continue
        if value and value != "runtime/default" and not str(value).startswith("localhost/"):
            yield f"annotation {key}: AppArmor profile {value!r} is not allowed"


def restricted_violations_spec(
    spec: Mapping[str, Any], annotations: Mapping[str, Any] | None = None
) -> list[str]:
    """Violations of PSS "restricted" by a pod spec (e.g. a Deployment's template).

    ``annotations`` are the pod (template) metadata's, for the AppArmor annotations.
    An empty list means the pod would be admitted by a ``restricted`` namespace.
    """
    pod_sc = _map(spec.get("securityContext"))
    violations = [
        *_check_host_namespaces(spec),
        *_check_pod_security_context(spec),
        *_check_volumes(spec),
        *_check_apparmor_annotations(_map(annotations)),
    ]
    for who, container in _containers(spec):
        violations.extend(_check_container(who, container, pod_sc))
    return violations


def restricted_violations(pod: Mapping[str, Any]) -> list[str]:
    """Violations of PSS "restricted" by a pod manifest; ``[]`` if it complies.

    Messages name the offender, e.g. ``container "sandbox": allowPrivilegeEscalation
    must be false``.
    """
    return restricted_violations_spec(
        _map(pod.get("spec")), _map(pod.get("metadata")).get("annotations")
    )


def hardening_violations(pod: Mapping[str, Any]) -> list[str]:
    """Our rules beyond "restricted" for sandbox pods; ``[]`` if the pod complies.

    PSS does not cover these (k8s docs: "Pod Security Standards" lists only the
    fields above), so the namespace cannot enforce them; see docs on each rule.
    """
    spec = _map(pod.get("spec"))
    violations: list[str] = []
    # A token would let a compromised agent call the API server as the pod's
    # ServiceAccount ("Configure Service Accounts for Pods"). Default is true.
    if spec.get("automountServiceAccountToken") is not False:
        violations.append("pod: automountServiceAccountToken must be false")
    # Service links leak the namespace's Services as env vars. Default is true.
    if spec.get("enableServiceLinks") is not False:
        violations.append("pod: enableServiceLinks must be false")
    # One pod is one session; a restart would be a new empty session in disguise.
    if spec.get("restartPolicy") != "Never":
        violations.append("pod: restartPolicy must be Never")
    for volume in _list(spec.get("volumes")):
        v = _map(volume)
        name = v.get("name", "?")
        # No Secret may reach the sandbox, mounted or projected; nor a hand-made
        # token projection that would undo automountServiceAccountToken: false.
        if "secret" in v:
            violations.append(f'volume "{name}": secret volumes are not allowed')
        for source in _list(_map(v.get("projected")).get("sources")):
            for kind in ("secret", "serviceAccountToken"):
                if kind in _map(source):
                    violations.append(f'volume "{name}": projected {kind} is not allowed')
        # An unbounded emptyDir can fill the node's disk (or RAM for medium: Memory).
        if "emptyDir" in v and not _map(v.get("emptyDir")).get("sizeLimit"):
            violations.append(f'volume "{name}": emptyDir must set sizeLimit')
    for who, c in _containers(spec):
        sc = _map(c.get("securityContext"))
        # The agent may only write to its sized emptyDirs.
        if sc.get("readOnlyRootFilesystem") is not True:
            violations.append(f"{who}: readOnlyRootFilesystem must be true")
        # Ephemeral containers cannot have resources (k8s API: EphemeralContainer).
        if not who.startswith("ephemeralContainer"):
            limits = _map(_map(c.get("resources")).get("limits"))
            violations.extend(
                f"{who}: resources.limits.{r} must be set"
                for r in ("cpu", "memory")
                if r not in limits
            )
        for env_from in _list(c.get("envFrom")):
            if "secretRef" in _map(env_from):
                violations.append(f"{who}: envFrom secretRef is not allowed")
        for env in _list(c.get("env")):
            if "secretKeyRef" in _map(_map(env).get("valueFrom")):
                name = _map(env).get("name")
                violations.append(f"{who}: env {name} must not come from a secretKeyRef")
    return violations
