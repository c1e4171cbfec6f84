"""Pure builders of the Kubernetes objects a sandbox needs.

Modelled on KubeSpawner's ``objects.py``: every function here is a pure function of
its arguments (no I/O, no clock, no randomness), returns plain camelCase dicts that
can be sent to the API as they are, and is unit-tested against the JSON schema of
the API and the Pod Security Standards (see :mod:`.pss`).

The pod is built to pass the **restricted** Pod Security Standard and our own
stricter rules (:func:`.pss.hardening_violations`), because it runs an agent that
reads untrusted content: treat whatever runs inside it as hostile.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from ..spec import COURSE_DIR, SandboxSpec, safe_slug, scrub_env
from .options import (
    COURSE_LABEL,
    EMPTY_ANNOTATION,
    INSTANCE_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    SESSION_LABEL,
    TERMINAL_LABEL,
    TERMINAL_NAME_ANNOTATION,
    USER_LABEL,
    USERNAME_ANNOTATION,
    PodOptions,
)

# Recommended labels (k8s docs: "Recommended Labels", app.kubernetes.io/*).
NAME_LABEL = "app.kubernetes.io/name"
COMPONENT_LABEL = "app.kubernetes.io/component"
PART_OF_LABEL = "app.kubernetes.io/part-of"
APP_NAME = "claude-sandbox"
COMPONENT = "sandbox"
PART_OF = "jupyter-claude-pods"

#: Prefix of every sandbox pod name.
POD_NAME_PREFIX = "sbx-"
#: Seconds between SIGTERM and SIGKILL on delete. The sandbox holds nothing worth
#: flushing, and a short grace frees the namespace quota quickly when a terminal
#: closes (k8s docs: "Pod Lifecycle" > "Termination of Pods"; default is 30).
TERMINATION_GRACE_PERIOD_SECONDS = 5
#: Mount path of the scratch volume; the root filesystem is read-only.
TMP_DIR = "/tmp"  # noqa: S108 - a private emptyDir, not the node's /tmp
#: Volumes of a course session: the operator's courses volume (mounted with the
#: material's subPath only), and a downward-API file that is always empty, laid over
#: files the sandbox must not see.
COURSES_VOLUME = "courses"
MASK_VOLUME = "course-mask"
MASK_FILE = "empty"

# RFC 1123 label: pod names and session ids (k8s docs: "Object Names and IDs").
# Used with fullmatch: "$" would also match before a trailing newline.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_LABEL_MAX = 63


def pod_name(spec: SandboxSpec) -> str:
    """``sbx-{user_slug}-{session_id}``, shortened to a valid DNS-1123 label.

    Pod names must be RFC 1123 labels (at most 63 characters, lowercase
    alphanumerics and ``-``, starting and ending alphanumeric) so they can also be
    hostnames (k8s docs: "Object Names and IDs" > "DNS Label Names"). The session id
    is what makes the name unique, so it is kept whole and the user part, which is
    only there for humans reading ``kubectl get pods``, is trimmed instead.

    Raises :class:`ValueError` if the session id is not a DNS label short enough
    to leave room for at least one character of the user slug, or if the result is
    still not a DNS label (a slug bug; see ``tests/sandbox/test_objects.py``).
    """
    session = spec.session_id
    budget = _DNS_LABEL_MAX - len(POD_NAME_PREFIX) - len("-") - len(session)
    if not _DNS_LABEL.fullmatch(session) or budget < 1:
        raise ValueError(
            f"session id {session!r} must be a DNS-1123 label of at most "
            f"{_DNS_LABEL_MAX - len(POD_NAME_PREFIX) - 2} characters"
        )
    # A slug starts with an alphanumeric, so any non-empty prefix still does after
    # stripping the dashes a cut may leave at its end.
    user = spec.user_slug[:budget].rstrip("-")
    name = f"{POD_NAME_PREFIX}{user}-{session}"
    if not _DNS_LABEL.fullmatch(name):
        # Defence in depth: fail here with a clear message rather than with a 422
        # from the API server if the slug ever lets something odd through.
        raise ValueError(f"cannot make a valid pod name for user {spec.user!r}")
    return name


def _instance_value(options: PodOptions) -> str:
    # Label values are at most 63 characters of [-A-Za-z0-9_.] (k8s docs: "Labels
    # and Selectors" > "Syntax and character set"); safe_slug keeps it in that set.
    return safe_slug(options.instance, max_length=_DNS_LABEL_MAX)


def make_labels(spec: SandboxSpec, options: PodOptions) -> dict[str, str]:
    """The sandbox pod's labels: operator extras first, then ours, which win.

    Ours identify the pod to the watch, the per-user caps and the orphan sweep, so an
    operator's ``extra_labels`` must not be able to move a pod out of (or into) our
    selectors. Values are slugs because label values have a restricted syntax; the
    raw names go into annotations (see :func:`make_pod`).
    """
    ours = {
        NAME_LABEL: APP_NAME,
        COMPONENT_LABEL: COMPONENT,
        PART_OF_LABEL: PART_OF,
        MANAGED_BY_LABEL: MANAGED_BY,
        INSTANCE_LABEL: _instance_value(options),
        USER_LABEL: spec.user_slug,
        TERMINAL_LABEL: safe_slug(spec.terminal),
        SESSION_LABEL: spec.session_id,
    }
    if spec.course is not None:
        ours[COURSE_LABEL] = safe_slug(spec.course.id)
    return {**options.extra_labels, **ours}


def make_owner_reference(name: str, uid: str) -> dict[str, str]:
    """An owner reference to the Pod ``name`` with ``uid`` (for ``PodOptions``).

    Owner references only work within one namespace: a cross-namespace owner makes
    the garbage collector treat the owner as absent and delete the dependent (k8s
    docs: "Owners and Dependents"). Only pass the Jupyter server's own pod when it
    runs in the sandbox namespace.
    """
    return {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid}


def _owner_references(options: PodOptions) -> list[dict[str, Any]]:
    ref = options.owner_reference
    if ref is None:
        return []
    # blockOwnerDeletion: true needs "update" on the owner's finalizers subresource
    # where the OwnerReferencesPermissionEnforcement admission plugin is enabled,
    # which the server's role should not need; controller: false because the server is not
    # a controller of the sandbox (k8s API: OwnerReference).
    return [
        {
            "apiVersion": ref["apiVersion"],
            "kind": ref["kind"],
            "name": ref["name"],
            "uid": ref["uid"],
            "blockOwnerDeletion": False,
            "controller": False,
        }
    ]


def _escape_env_value(value: str) -> str:
    # The kubelet expands $(VAR) in env values and turns $$ into $ (k8s API:
    # EnvVar.value; docs: "Define Dependent Environment Variables"). Doubling every
    # $ makes each value reach the process exactly as configured.
    return value.replace("$", "$$")


def make_env(spec: SandboxSpec, options: PodOptions) -> list[dict[str, str]]:
    """The container's environment, lowest precedence first.

    Sources, later ones winning: our defaults (``HOME``, ``TERM``, the proxy URL),
    the operator's ``options.env``, then the session's ``spec.env``. Each source goes
    through :func:`scrub_env` so the real ``ANTHROPIC_API_KEY`` can never reach the
    sandbox however it was configured. A name appears once, at the position of its
    first source, with the value of its last (plain ``dict`` merge semantics).
    """
    defaults = {"HOME": options.home_dir, "TERM": "xterm-256color"}
    if options.proxy_url:
        defaults["ANTHROPIC_BASE_URL"] = options.proxy_url
    merged: dict[str, str] = {}
    for source in (defaults, options.env, spec.env):
        # str(): traitlets or JSON config may hand over numbers; the API wants strings.
        merged.update({str(k): str(v) for k, v in source.items()})
    return [{"name": k, "value": _escape_env_value(v)} for k, v in scrub_env(merged).items()]


def _resources(options: PodOptions) -> dict[str, dict[str, str]]:
    requests = {
        "cpu": options.cpu_request,
        "memory": options.memory_request,
        "ephemeral-storage": options.ephemeral_storage_request,
    }
    limits = {
        "cpu": options.cpu_limit,
        "memory": options.memory_limit,
        "ephemeral-storage": options.ephemeral_storage_limit,
        # Extended resources cannot be overcommitted: the API server sets request = limit.
        **options.extra_limits,
    }
    resources = {
        "requests": {k: v for k, v in requests.items() if v is not None},
        "limits": {k: v for k, v in limits.items() if v is not None},
    }
    return {k: v for k, v in resources.items() if v}


def _course_volumes(
    spec: SandboxSpec, options: PodOptions
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumeMounts, volumes) showing the session's course material read-only at /course.

    Only ``subPath`` = the material is mounted, never the courses volume's root: the
    manifests beside the material hold the quiz answers. Files the spec hides (a
    manifest or seed ``CLAUDE.md`` when the material *is* the course directory) get an
    empty downward-API file mounted over them; they exist on the volume (the server
    checked its own view of it), so the runtime needs no new mount point in the
    read-only mount.
    """
    course = spec.course
    if course is None:
        return [], []
    if not options.courses_volume:
        raise ValueError("a course was requested but no courses volume is configured")
    mounts: list[dict[str, Any]] = [
        {
            "name": COURSES_VOLUME,
            "mountPath": COURSE_DIR,
            "subPath": course.subpath,
            "readOnly": True,
        }
    ]
    volumes: list[dict[str, Any]] = [
        {**copy.deepcopy(options.courses_volume), "name": COURSES_VOLUME}
    ]
    if course.hidden:
        mounts += [
            {
                "name": MASK_VOLUME,
                "mountPath": f"{COURSE_DIR}/{name}",
                "subPath": MASK_FILE,
                "readOnly": True,
            }
            for name in course.hidden
        ]
        field_path = f"metadata.annotations['{EMPTY_ANNOTATION}']"
        volumes.append(
            {
                "name": MASK_VOLUME,
                "downwardAPI": {
                    "items": [{"path": MASK_FILE, "fieldRef": {"fieldPath": field_path}}]
                },
            }
        )
    return mounts, volumes


def _seccomp_runtime_default() -> dict[str, str]:
    # A fresh dict per use: the manifest must not share sub-objects (callers mutate).
    return {"type": "RuntimeDefault"}


def make_pod(spec: SandboxSpec, options: PodOptions) -> dict[str, Any]:
    """The sandbox pod manifest for ``spec`` under ``options`` (camelCase, ``v1/Pod``).

    The result shares no mutable object with ``options``, so callers may modify it.
    Raises :class:`ValueError` for a bad session id (see :func:`pod_name`), a home
    directory that is not an absolute path other than ``/tmp``, or a course without
    ``options.courses_volume``.
    """
    if not options.home_dir.startswith("/") or options.home_dir.rstrip("/") == TMP_DIR:
        raise ValueError(f"home_dir {options.home_dir!r} must be an absolute path other than /tmp")
    course_mounts, course_volumes = _course_volumes(spec, options)

    metadata: dict[str, Any] = {
        "name": pod_name(spec),
        "namespace": options.namespace,
        "labels": make_labels(spec, options),
        # Raw names are kept for humans and for mapping back; annotations accept any
        # string, labels do not (k8s docs: "Annotations").
        "annotations": {
            **options.extra_annotations,
            USERNAME_ANNOTATION: spec.user,
            TERMINAL_NAME_ANNOTATION: spec.terminal,
        },
    }
    if any(v["name"] == MASK_VOLUME for v in course_volumes):
        metadata["annotations"][EMPTY_ANNOTATION] = ""
    owner_references = _owner_references(options)
    if owner_references:
        metadata["ownerReferences"] = owner_references

    container_security_context: dict[str, Any] = {
        # Each of these is required by the "restricted" Pod Security Standard except
        # readOnlyRootFilesystem, which is ours: the agent may only write to its home
        # and /tmp emptyDirs (k8s docs: "Pod Security Standards" > "Restricted").
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": _seccomp_runtime_default(),
    }
    container: dict[str, Any] = {
        "name": options.container_name,
        "image": options.image,
        "imagePullPolicy": options.image_pull_policy,
        "command": list(options.container_command),
        "env": make_env(spec, options),
        "securityContext": container_security_context,
        "volumeMounts": [
            {"name": "home", "mountPath": options.home_dir},
            {"name": "tmp", "mountPath": TMP_DIR},
            *course_mounts,
        ],
    }
    if options.tty:
        # attach mode: the main process is the sandbox program and talks to a TTY.
        container["stdin"] = True
        container["tty"] = True
    if options.working_dir:
        container["workingDir"] = options.working_dir
    elif spec.course is not None:
        container["workingDir"] = COURSE_DIR
    resources = _resources(options)
    if resources:
        container["resources"] = resources

    pod_spec: dict[str, Any] = {
        # A sandbox is one session: when its program exits the pod is done; restarting
        # it would silently start a new, empty session under the same terminal.
        "restartPolicy": "Never",
        # Nothing in the sandbox may talk to the API server as anyone (k8s docs:
        # "Configure Service Accounts for Pods" > "Opt out of API credential
        # automounting").
        "automountServiceAccountToken": False,
        # Service links inject every Service's host and port of the namespace as env
        # vars: noise at best, a map of the namespace at worst (k8s API:
        # PodSpec.enableServiceLinks, default true).
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_PERIOD_SECONDS,
        # Explicit, for readers of `kubectl get -o yaml`; "restricted" forbids true.
        "hostNetwork": False,
        "hostPID": False,
        "hostIPC": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": options.run_as_user,
            "runAsGroup": options.run_as_group,
            # Makes the emptyDirs group-writable by the sandbox user whatever the
            # image's user is (k8s docs: "Configure a Security Context" > fsGroup).
            "fsGroup": options.fs_group,
            "seccompProfile": _seccomp_runtime_default(),
        },
        "containers": [container],
        # sizeLimit: a full disk is the node's problem otherwise; exceeding it evicts
        # the pod (k8s docs: "Volumes" > emptyDir; "Local ephemeral storage").
        "volumes": [
            {"name": "home", "emptyDir": {"sizeLimit": options.home_size_limit}},
            {"name": "tmp", "emptyDir": {"sizeLimit": options.tmp_size_limit}},
            *course_volumes,
        ],
    }
    if options.active_deadline_seconds is not None:
        # Backstop against forgotten sessions; counts from the pod's start time
        # (k8s API: PodSpec.activeDeadlineSeconds).
        pod_spec["activeDeadlineSeconds"] = options.active_deadline_seconds
    if options.node_selector:
        pod_spec["nodeSelector"] = dict(options.node_selector)
    if options.tolerations:
        pod_spec["tolerations"] = [copy.deepcopy(t) for t in options.tolerations]
    if options.runtime_class_name:
        # e.g. gVisor's "runsc" (k8s docs: "Runtime Class").
        pod_spec["runtimeClassName"] = options.runtime_class_name

    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}


def label_selector(labels: Mapping[str, str]) -> str:
    """An equality-based label selector string, ``"a=b,c=d"``, sorted for stability."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def instance_selector(options: PodOptions) -> str:
    """Selects every sandbox pod this server instance manages (watch, orphan sweep).

    Both labels are needed: ``managed-by`` alone would also match other instances'
    pods sharing the namespace, and the sweep must never delete those.
    """
    return label_selector({MANAGED_BY_LABEL: MANAGED_BY, INSTANCE_LABEL: _instance_value(options)})
