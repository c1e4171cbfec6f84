"""A fake Kubernetes API server for tests that speaks the real HTTP and WebSocket protocols.

Why a server and not a mock: the extension talks to Kubernetes through kubernetes_asyncio
and operators debug it with kubectl. Patching client objects would only test our guesses
about those libraries. A server on 127.0.0.1 that the *real* clients reach through a
kubeconfig exercises their request building, (de)serialisation, watch streaming, exec
WebSocket framing and error handling exactly as against a cluster.

Usage::

    async with FakeKubeAPI() as api:                      # or: await api.start() / stop()
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig", namespace="sandboxes")
        ...                                               # drive the code under test
        pod = await api.wait_for_phase("term-1", "Running")
        api.faults.image_pull_error("broken-image")       # failure injection

What is simulated:

* discovery (``/version``, ``/api``, ``/apis``, ``/api/v1``), namespaces (with labels)
  and events;
* what ``jupyter claude-pods doctor`` asks: ``SelfSubjectAccessReview`` (answered from the
  same RBAC denials as ``Faults.forbid``), and one node whose ``status.images`` lists
  ``node_images``;
* pods: create / get / list / watch / patch / delete (+ collection) with ``kind: Status``
  errors, a global resourceVersion counter and a bounded watch history (410 Expired outside
  it); kubectl's Table rendering (``Accept: ...;as=Table``) and watch-list
  (``sendInitialEvents=true`` + the ``k8s.io/initial-events-end`` bookmark);
* a pod lifecycle (Pending -> scheduled -> ContainerCreating -> Running) driven by
  ``loop.call_later``. The container is "run" locally in a private temp dir: attach-mode
  containers (``stdin`` and ``tty``) spawn ``command + args`` under a PTY, the others idle
  like ``sleep infinity`` and only execs spawn processes;
* ``pods/exec`` and ``pods/attach`` over WebSocket (``v5``/``v4.channel.k8s.io``) bridged to
  local PTYs or pipes, plus ``pods/log`` (the main process's output);
* failure injection (``FakeKubeAPI.faults``, ``kill_pod``, ``expire_watches``, ``go_down``)
  that answers as a real API server or kubelet does.

What the clients actually send (observed against this server):

* kubernetes_asyncio 36: query booleans capitalised (``watch=True``, ``tty=True``); its
  ``WsApiClient`` offers only ``v4.channel.k8s.io`` unless the header is set by hand.
* kubernetes 37 (sync): lowercase booleans; offers ``v5.channel.k8s.io,v4.channel.k8s.io``;
  ``write_stdin(str)`` sends *text* frames, so stdin accepts text and binary frames. Its
  ``WSClient.close()`` leaks the socket after a server-initiated close.
* kubectl 1.37.1: no ``Authorization`` header at all over http:// (any request), hence a
  missing header is accepted and only a wrong token gets 401; exec offers ``v5`` only;
  ``get`` asks for a Table; ``delete`` waits with a watch-list; ``create``/``apply`` need
  ``--validate=false`` (no ``/openapi`` here).

Deliberate differences from a real cluster, each chosen to keep tests fast and strict:

* validation (``kubernetes-validate``, 1.34 schemas, strict) answers 422 Invalid for type
  errors and unknown fields too; a real server answers 400 for type errors and, by default,
  silently drops unknown fields (``fieldValidation=Ignore`` disables the unknown-field check);
* an idle (exec-mode) container exits at once on SIGTERM, so deleting such a pod does not
  wait for its grace period; real processes get SIGTERM, then SIGKILL after the grace period
  (``max_grace_seconds`` caps that wait);
* containers are never restarted (``restartPolicy`` is ignored): an exited main process
  leaves the container terminated and the pod Succeeded/Failed;
* env ``valueFrom`` supports ``fieldRef`` only; ``$(VAR)`` references are not expanded.

Everything runs on the current asyncio loop without threads: child processes are spawned
with ``subprocess.Popen`` and reaped through a pidfd registered with ``loop.add_reader``
(``asyncio.create_subprocess_exec`` on Python 3.11 starts one waiter thread per child).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import errno
import fcntl
import hashlib
import json
import logging
import os
import pty
import re
import secrets
import shutil
import signal
import struct
import subprocess
import tempfile
import termios
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import tornado.httpserver
import tornado.netutil
import tornado.web
import tornado.websocket
from tornado.iostream import StreamClosedError

if TYPE_CHECKING:
    from typing_extensions import Self

log = logging.getLogger(__name__)

#: A Kubernetes object as plain JSON data.
Obj = dict[str, Any]

V5_PROTOCOL = "v5.channel.k8s.io"
V4_PROTOCOL = "v4.channel.k8s.io"
NODE_NAME = "fake-node-1"
HOST_IP = "10.0.0.1"
DEFAULT_USER = "system:serviceaccount:jupyter:jupyter-server"

STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255

_LOG_LIMIT = 1 << 20
_TERMINAL_PHASES = ("Succeeded", "Failed")


# --------------------------------------------------------------------------- errors


def status_body(
    code: int, reason: str, message: str, details: Mapping[str, Any] | None = None
) -> Obj:
    """A ``kind: Status`` failure body with the field order the API server uses."""
    body: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details is not None:
        body["details"] = dict(details)
    body["code"] = code
    return body


class ApiError(tornado.web.HTTPError):
    """An error that the handlers answer with a ``kind: Status`` JSON body.

    Subclassing ``HTTPError`` lets tornado carry the status code to ``write_error``.
    """

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(code)
        self.body = status_body(code, reason, message, details)
        self.headers = dict(headers or {})

    def __str__(self) -> str:
        return f"{self.body['code']} {self.body['reason']}: {self.body['message']}"


def _not_found(name: str, kind: str = "pods") -> ApiError:
    return ApiError(404, "NotFound", f'{kind} "{name}" not found', {"name": name, "kind": kind})


def _bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def exit_status(code: int, argv: Sequence[str]) -> Obj:
    """The channel-3 status the kubelet sends when an exec'd command ends."""
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": (
            "command terminated with non-zero exit code: error executing command "
            f"[{' '.join(argv)}], exit code {code}"
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


# --------------------------------------------------------------------------- small helpers


def _now(offset: float = 0.0) -> str:
    """RFC 3339 seconds, as metav1.Time serialises."""
    moment = datetime.now(timezone.utc) + timedelta(seconds=offset)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _field_path(parts: Iterable[str | int]) -> str:
    """``spec.containers[0].name`` from ``["spec", "containers", 0, "name"]``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _split_tag(ref: str) -> tuple[str, str]:
    """Split ``repo:tag`` without mistaking a registry port for a tag."""
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        return ref[:colon], ref[colon + 1 :]
    return ref, ""


def normalise_image(image: str) -> str:
    """``docker.io/library/busybox:latest`` from ``busybox``, as the kubelet reports it."""
    name, _, digest = image.partition("@")
    first = name.split("/", 1)[0]
    if "/" not in name:
        name = f"docker.io/library/{name}"
    elif "." not in first and ":" not in first and first != "localhost":
        name = f"docker.io/{name}"
    repo, tag = _split_tag(name)
    if digest:
        return f"{repo}@{digest}"
    return f"{repo}:{tag or 'latest'}"


def _image_id(image: str) -> str:
    repo, _ = _split_tag(normalise_image(image).split("@", 1)[0])
    return f"{repo}@sha256:{hashlib.sha256(image.encode()).hexdigest()}"


def _get_path(obj: Mapping[str, Any], dotted: str) -> str:
    """Field-selector value of ``dotted`` in ``obj`` (missing -> "", bool -> "true")."""
    cur: Any = obj
    for part in dotted.split("."):
        if not isinstance(cur, Mapping):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def _flag(value: str | None) -> bool:
    """Query booleans: kubernetes_asyncio sends ``True``, the others ``true``."""
    return value is not None and value.strip().lower() in ("true", "1", "t", "yes")


def _set_winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _take_controlling_tty() -> None:
    """Runs in the child after ``setsid()``: make the PTY slave (fd 0) its terminal.

    Without a controlling terminal an interactive shell has no job control and ^C does
    not reach the foreground job.
    """
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


# --------------------------------------------------------------------------- selectors


@dataclass(frozen=True)
class _Requirement:
    """One label-selector requirement, with the API server's semantics for absent keys."""

    key: str
    op: str
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "==", "in"):
            return present and labels[self.key] in self.values
        # "!=" and "notin" also match objects without the key.
        return labels.get(self.key) not in self.values


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside ``in (a,b)`` parentheses."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


_SET_TERM = re.compile(r"^([^\s!=(),]+)\s+(in|notin)\s+\(([^)]*)\)$")
_CMP_TERM = re.compile(r"^([^\s!=(),]+)\s*(==|!=|=)\s*([^\s!=(),]*)$")
_KEY_TERM = re.compile(r"^(!?)\s*([^\s!=(),]+)$")


def parse_label_selector(text: str) -> Callable[[Mapping[str, str]], bool]:
    """A matcher for ``a=b``, ``a==b``, ``a!=b``, ``a``, ``!a``, ``a in (x,y)``, ``a notin (x)``."""
    requirements: list[_Requirement] = []
    for term in _split_top_level(text):
        if match := _SET_TERM.match(term):
            values = frozenset(v.strip() for v in match.group(3).split(",") if v.strip())
            requirements.append(_Requirement(match.group(1), match.group(2), values))
        elif match := _CMP_TERM.match(term):
            requirements.append(
                _Requirement(match.group(1), match.group(2), frozenset({match.group(3)}))
            )
        elif match := _KEY_TERM.match(term):
            op = "!" if match.group(1) else "exists"
            requirements.append(_Requirement(match.group(2), op))
        else:
            raise _bad_request(
                f'unable to parse requirement: <nil>: Invalid value: "{term}": '
                "invalid label selector"
            )
    return lambda labels: all(r.matches(labels) for r in requirements)


POD_FIELDS = frozenset(
    {
        "metadata.name",
        "metadata.namespace",
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    }
)
EVENT_FIELDS = frozenset(
    {
        "metadata.name",
        "metadata.namespace",
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    }
)


def parse_field_selector(text: str, allowed: frozenset[str]) -> Callable[[Obj], bool]:
    """A matcher for ``field=value``, ``field==value`` and ``field!=value`` terms."""
    terms: list[tuple[str, bool, str]] = []
    for term in _split_top_level(text):
        match = re.match(r"^([^!=]+?)\s*(==|!=|=)\s*(.*)$", term)
        if not match:
            raise _bad_request(f"invalid selector: '{text}'; can't understand '{term}'")
        name, op, value = match.group(1).strip(), match.group(2), match.group(3).strip()
        if name not in allowed:
            raise _bad_request(f'field label not supported: "{name}"')
        terms.append((name, op == "!=", value))
    return lambda obj: all((_get_path(obj, n) == v) != negate for n, negate, v in terms)


# --------------------------------------------------------------------------- validation

_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_NAME_PART = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")

_MSG_SUBDOMAIN = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
    r"regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_MSG_LABEL = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
_MSG_LABEL_VALUE = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    "'my_value',  or '12345', regex used for validation is "
    "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
_MSG_NAME_PART = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and "
    "end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex "
    "used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)


@dataclass(frozen=True)
class FieldError:
    """One entry of ``details.causes`` of a 422 Invalid Status."""

    reason: str
    field: str
    message: str

    def cause(self) -> Obj:
        return {"reason": self.reason, "message": self.message, "field": self.field}

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def _invalid(field_name: str, value: Any, detail: str) -> FieldError:
    return FieldError(
        "FieldValueInvalid", field_name, f"Invalid value: {json.dumps(value)}: {detail}"
    )


def _required(field_name: str) -> FieldError:
    return FieldError("FieldValueRequired", field_name, "Required value")


def invalid_error(kind: str, name: str, errors: Sequence[FieldError]) -> ApiError:
    """422 Invalid, worded like apimachinery's ``NewInvalid`` (brackets for several errors)."""
    text = "; ".join(str(e) for e in errors)
    if len(errors) > 1:
        text = "[" + ", ".join(str(e) for e in errors) + "]"
    return ApiError(
        422,
        "Invalid",
        f'{kind} "{name}" is invalid: {text}',
        {"name": name, "kind": kind, "causes": [e.cause() for e in errors]},
    )


def schema_errors(obj: Obj, version: str, strict: bool) -> list[FieldError]:
    """Validate against the published OpenAPI schema (kubernetes-validate, offline).

    The real server would reject type errors with 400 while decoding and, by default,
    silently drop unknown fields; the fake reports both as 422 naming the field so that
    a typo in a pod spec fails loudly in tests.
    """
    import kubernetes_validate  # slow to import: only when validating

    try:
        kubernetes_validate.validate(obj, version, strict=strict)
    except kubernetes_validate.ValidationError as exc:
        path = list(exc.path)
        if exc.validator == "required":
            match = re.match(r"'(.+)' is a required property", exc.message)
            prop = match.group(1) if match else "?"
            return [_required(_field_path([*path, prop]))]
        if exc.validator == "additionalProperties":
            names = re.findall(r"'([^']+)'", exc.message.partition("(")[2]) or ["?"]
            return [
                FieldError(
                    "FieldValueInvalid",
                    _field_path([*path, name]),
                    f'Invalid value: unknown field "{_field_path([*path, name])}"',
                )
                for name in names
            ]
        return [_invalid(_field_path(path) or "<root>", exc.instance, exc.message)]
    return []


def _check_labels(labels: Any, field_name: str) -> list[FieldError]:
    errors: list[FieldError] = []
    if not isinstance(labels, Mapping):
        return errors
    for key, value in labels.items():
        prefix, _, name = str(key).rpartition("/")
        if not _NAME_PART.match(name) or len(name) > 63:
            errors.append(_invalid(field_name, key, _MSG_NAME_PART))
        elif prefix and not _DNS1123_SUBDOMAIN.match(prefix):
            errors.append(_invalid(field_name, key, "prefix part " + _MSG_SUBDOMAIN))
        if not isinstance(value, str):
            continue
        if len(value) > 63:
            errors.append(_invalid(field_name, value, "must be no more than 63 characters"))
        elif not _LABEL_VALUE.match(value):
            errors.append(_invalid(field_name, value, _MSG_LABEL_VALUE))
    return errors


def semantic_errors(pod: Obj) -> list[FieldError]:
    """The apiserver's own validation that the JSON schema cannot express."""
    errors: list[FieldError] = []
    meta = pod.get("metadata") or {}
    name = meta.get("name", "")
    if len(name) > 253:
        errors.append(_invalid("metadata.name", name, "must be no more than 253 characters"))
    elif not _DNS1123_SUBDOMAIN.match(name):
        errors.append(_invalid("metadata.name", name, _MSG_SUBDOMAIN))
    errors += _check_labels(meta.get("labels"), "metadata.labels")
    spec = pod.get("spec") or {}
    containers = spec.get("containers") or []
    if not containers:
        errors.append(_required("spec.containers"))
    for group in ("initContainers", "containers"):
        seen: set[str] = set()
        for index, container in enumerate(spec.get(group) or []):
            if not isinstance(container, Mapping):
                continue
            base = f"spec.{group}[{index}]"
            cname = container.get("name") or ""
            if not cname:
                errors.append(_required(f"{base}.name"))
            elif not _DNS1123_LABEL.match(cname) or len(cname) > 63:
                errors.append(_invalid(f"{base}.name", cname, _MSG_LABEL))
            elif cname in seen:
                errors.append(
                    FieldError(
                        "FieldValueDuplicate",
                        f"{base}.name",
                        f"Duplicate value: {json.dumps(cname)}",
                    )
                )
            seen.add(cname)
            if not container.get("image"):
                errors.append(_required(f"{base}.image"))
    return errors


# --------------------------------------------------------------------------- faults


@dataclass
class _FailRule:
    remaining: int
    status: int
    verbs: frozenset[str]
    resources: frozenset[str]


def failure_error(status: int) -> ApiError:
    """What an overloaded or broken API server answers for ``status``."""
    if status == 429:
        return ApiError(
            429,
            "TooManyRequests",
            "Too many requests, please try again later.",
            {"retryAfterSeconds": 1},
            headers={"Retry-After": "1"},
        )
    if status == 503:
        return ApiError(
            503, "ServiceUnavailable", "the server is currently unable to handle the request"
        )
    if status == 504:
        return ApiError(
            504,
            "Timeout",
            "the server was unable to return a response in the time allotted, "
            "but may still be processing the request",
        )
    cause = "fake API server: injected failure"
    return ApiError(
        status,
        "InternalError",
        f"Internal error occurred: {cause}",
        {"causes": [{"message": cause}]},
    )


class Faults:
    """Failure injection; each switch answers as a real API server or kubelet would.

    Verbs are RBAC verbs (``get``, ``list``, ``watch``, ``create``, ``delete``, ``patch``,
    ``deletecollection``); exec and attach are ``create`` on ``pods/exec``/``pods/attach``.
    """

    def __init__(self, user: str, on_schedulable: Callable[[], None] | None = None) -> None:
        self.user = user
        self._on_schedulable = on_schedulable
        self._clear()

    def _clear(self) -> None:
        self.forbidden: set[tuple[str, str]] = set()
        self.quota: tuple[str, int, int] | None = None
        self.image_pull_errors: list[str] = []
        self.unschedulable = False
        self.failures: list[_FailRule] = []
        self.delays: list[tuple[str, str, float]] = []
        self.invalid_next: list[str] = []

    def forbid(self, verb: str, resource: str = "pods") -> None:
        """RBAC denies ``verb`` on ``resource`` (``pods``, ``pods/exec``, ...) -> 403."""
        self.forbidden.add((verb, resource))

    def allow(self, verb: str, resource: str = "pods") -> None:
        """Undo ``forbid``."""
        self.forbidden.discard((verb, resource))

    def exceed_quota(
        self, enabled: bool = True, *, name: str = "sandbox-quota", used: int = 10, limit: int = 10
    ) -> None:
        """Pod creates fail with the ResourceQuota admission 403."""
        self.quota = (name, used, limit) if enabled else None

    def image_pull_error(self, image_substring: str) -> None:
        """Pods whose image contains the substring go ErrImagePull -> ImagePullBackOff."""
        self.image_pull_errors.append(image_substring)

    def never_ready(self, enabled: bool = True) -> None:
        """Pods created from now on stay Pending: PodScheduled=False, reason Unschedulable.

        ``never_ready(False)`` frees capacity: the scheduler retries the waiting pods.
        """
        self.unschedulable = enabled
        if not enabled and self._on_schedulable is not None:
            self._on_schedulable()

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        verbs: Iterable[str] = ("create", "delete", "list"),
        resources: Iterable[str] = ("pods",),
    ) -> None:
        """The next ``n`` matching requests fail with ``status`` (500, 503, 504 or 429)."""
        self.failures.append(_FailRule(n, status, frozenset(verbs), frozenset(resources)))

    def delay_next(self, verb: str, seconds: float, resource: str = "pods") -> None:
        """The next matching request is answered only after ``seconds`` (then normally)."""
        self.delays.append((verb, resource, seconds))

    def fail_next_create_invalid(self, message: str) -> None:
        """The next pod create fails 422 with ``Pod "<name>" is invalid: <message>``."""
        self.invalid_next.append(message)

    def reset(self) -> None:
        """Switch every fault off (waiting unschedulable pods get scheduled)."""
        self._clear()
        if self._on_schedulable is not None:
            self._on_schedulable()

    @property
    def pending_failures(self) -> int:
        """How many injected failures have not been used yet."""
        return sum(rule.remaining for rule in self.failures)

    def take_delay(self, verb: str, resource: str) -> float:
        for index, (d_verb, d_resource, seconds) in enumerate(self.delays):
            if d_verb == verb and d_resource == resource:
                del self.delays[index]
                return seconds
        return 0.0

    def take_failure(self, verb: str, resource: str) -> int | None:
        for rule in self.failures:
            if rule.remaining > 0 and verb in rule.verbs and resource in rule.resources:
                rule.remaining -= 1
                if rule.remaining == 0:
                    self.failures.remove(rule)
                return rule.status
        return None

    def forbidden_error(
        self, verb: str, resource: str, namespace: str | None, name: str | None
    ) -> ApiError:
        """403 exactly as the RBAC authorizer words it."""
        group_resource = resource.split("/", 1)[0]
        subject = f'{group_resource} "{name}"' if name else group_resource
        scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
        details: Obj = {"name": name, "kind": group_resource} if name else {"kind": group_resource}
        return ApiError(
            403,
            "Forbidden",
            f'{subject} is forbidden: User "{self.user}" cannot {verb} resource "{resource}" '
            f'in API group "" {scope}',
            details,
        )


# --------------------------------------------------------------------------- processes


class LocalProcess:
    """A local process standing in for a container's main process or an exec session.

    Output is handed to ``on_output(channel, data)`` as soon as it is read; ``on_exit``
    gets the exit code the kubelet would report (128+N when killed by signal N) once the
    process has been reaped *and* its output drained, so the status never overtakes output.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str,
        tty: bool,
        stdin: bool,
        on_output: Callable[[int, bytes], None],
        on_exit: Callable[[int], None],
        rows: int = 24,
        cols: int = 80,
        exit_drain: float = 0.2,
    ) -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.cwd = cwd
        self.tty = tty
        self.want_stdin = stdin
        self.rows, self.cols = rows, cols
        self._on_output = on_output
        self._on_exit = on_exit
        self._exit_drain = exit_drain
        self.loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[int] = self.loop.create_future()
        self.pid = 0
        self.exit_code: int | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        self._raw_returncode: int | None = None
        self._read_fds: dict[int, int] = {}
        self._master: int | None = None
        self._stdin_fd: int | None = None
        self._stdin_closing = False
        self._writer_registered = False
        self._wbuf = bytearray()
        self._pidfd: int | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def alive(self) -> bool:
        return not self.exited.done()

    def start(self) -> None:
        """Spawn; raises ``OSError`` (e.g. ``FileNotFoundError``) if the argv cannot run."""
        if self.tty:
            self._start_pty()
        else:
            self._start_pipes()
        assert self._popen is not None
        self.pid = self._popen.pid
        for fd, channel in self._read_fds.items():
            self.loop.add_reader(fd, self._on_readable, fd, channel)
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):  # not Linux >= 5.3: poll instead
            self._timer = self.loop.call_later(0.02, self._poll_exit)
        else:
            self.loop.add_reader(self._pidfd, self._on_pidfd)
        log.debug("spawned pid %d: %s", self.pid, self.argv)

    def _start_pty(self) -> None:
        master, slave = pty.openpty()
        try:
            _set_winsize(master, self.rows, self.cols)
            self._popen = subprocess.Popen(
                self.argv,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                cwd=self.cwd,
                env=self.env,
                start_new_session=True,
                preexec_fn=_take_controlling_tty,  # noqa: PLW1509 - the fake starts no threads
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        self._master = master
        self._read_fds[master] = STDOUT
        self._stdin_fd = master if self.want_stdin else None

    def _start_pipes(self) -> None:
        stdin_r, stdin_w = os.pipe() if self.want_stdin else (None, None)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            self._popen = subprocess.Popen(
                self.argv,
                stdin=stdin_r if stdin_r is not None else subprocess.DEVNULL,
                stdout=out_w,
                stderr=err_w,
                cwd=self.cwd,
                env=self.env,
                start_new_session=True,
            )
        except BaseException:
            for fd in (stdin_w, out_r, err_r):
                if fd is not None:
                    os.close(fd)
            raise
        finally:
            for fd in (stdin_r, out_w, err_w):
                if fd is not None:
                    os.close(fd)
        for fd in (stdin_w, out_r, err_r):
            if fd is not None:
                os.set_blocking(fd, False)
        self._read_fds = {out_r: STDOUT, err_r: STDERR}
        self._stdin_fd = stdin_w

    # -- output and exit

    def _on_readable(self, fd: int, channel: int) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError as exc:  # EIO: the PTY slave has no holders left
            if exc.errno != errno.EIO:
                log.debug("read from pid %d failed: %s", self.pid, exc)
            data = b""
        if data:
            self._on_output(channel, data)
            return
        self._close_reader(fd)
        if self._raw_returncode is not None and not self._read_fds:
            self._finish()

    def _close_reader(self, fd: int) -> None:
        if self._read_fds.pop(fd, None) is None:
            return
        self.loop.remove_reader(fd)
        if fd != self._master:
            os.close(fd)

    def _on_pidfd(self) -> None:
        self._check_exit()

    def _poll_exit(self) -> None:
        self._timer = None
        if not self._check_exit():
            self._timer = self.loop.call_later(0.02, self._poll_exit)

    def _check_exit(self) -> bool:
        assert self._popen is not None
        returncode = self._popen.poll()
        if returncode is None:
            return False
        if self._pidfd is not None:
            self.loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        self._raw_returncode = returncode
        if self._read_fds:
            # Output still buffered (or a background child holds the terminal): drain
            # until EOF, but do not wait forever for a process that outlives its parent.
            self._timer = self.loop.call_later(self._exit_drain, self._finish)
        else:
            self._finish()
        return True

    def _finish(self) -> None:
        if self.exited.done():
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for fd in list(self._read_fds):
            self._close_reader(fd)
        self._close_stdin_fd()
        self._close_master()
        raw = self._raw_returncode if self._raw_returncode is not None else -signal.SIGKILL
        code = 128 - raw if raw < 0 else raw
        self.exit_code = code
        self.exited.set_result(code)
        log.debug("pid %d exited with %d", self.pid, code)
        self._on_exit(code)

    # -- input

    def write(self, data: bytes) -> None:
        """Queue ``data`` for the process's stdin (or PTY input) without blocking."""
        if self._stdin_fd is None or self._stdin_closing or not data:
            return
        self._wbuf += data
        self._flush_stdin()

    def _flush_stdin(self) -> None:
        fd = self._stdin_fd
        if fd is None:
            return
        while self._wbuf:
            try:
                written = os.write(fd, self._wbuf)
            except BlockingIOError:
                if not self._writer_registered:
                    self.loop.add_writer(fd, self._flush_stdin)
                    self._writer_registered = True
                return
            except OSError:  # EPIPE / EIO: the reader is gone
                self._wbuf.clear()
                break
            del self._wbuf[:written]
        if self._writer_registered:
            self.loop.remove_writer(fd)
            self._writer_registered = False
        if self._stdin_closing and fd != self._master:
            self._close_stdin_fd()

    def close_stdin(self) -> None:
        """EOF on stdin: close the pipe, or type VEOF (^D) into a PTY.

        Closing a PTY master would hang the whole terminal up, output included.
        """
        if self._stdin_fd is None or self._stdin_closing:
            return
        if self._stdin_fd == self._master:
            self.write(b"\x04")
        self._stdin_closing = True
        self._flush_stdin()

    def _close_stdin_fd(self) -> None:
        fd, self._stdin_fd = self._stdin_fd, None
        if fd is None:
            return
        if self._writer_registered:
            self.loop.remove_writer(fd)
            self._writer_registered = False
        if fd != self._master:  # the PTY master is closed by _close_master
            os.close(fd)

    def _close_master(self) -> None:
        master = self._master
        if master is None:
            return
        self._close_reader(master)
        if self._stdin_fd == master:
            self._close_stdin_fd()
        self._master = None
        os.close(master)

    def resize(self, cols: int, rows: int) -> None:
        """TIOCSWINSZ on the PTY; the kernel sends SIGWINCH to the foreground job."""
        self.rows, self.cols = rows, cols
        if self._master is not None:
            _set_winsize(self._master, rows, cols)

    def hangup(self) -> None:
        """The client went away: a PTY is hung up (SIGHUP), a stdin pipe is closed.

        A non-tty process keeps running, as it does in a real container when
        ``kubectl exec`` is interrupted.
        """
        if self.tty:
            self._close_master()
            if self._raw_returncode is not None:
                self._finish()
        else:
            self.close_stdin()

    def signal(self, signum: int) -> None:
        """Signal the process group (the process is a session leader)."""
        if self.pid <= 0:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)


def kill_sessions(session_ids: Iterable[int]) -> None:
    """SIGKILL every process in the given sessions (each spawn is a session leader).

    Job-control shells move jobs into their own process groups, so ``killpg`` on the
    leader's group is not enough; /proc tells which processes belong to the session.
    """
    sids = set(session_ids)
    if not sids:
        return
    for sid in sids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(sid, signal.SIGKILL)
    try:
        entries = [e.name for e in os.scandir("/proc") if e.name.isdigit()]
    except OSError:
        return
    for pid in entries:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 3 and int(fields[3]) in sids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(pid), signal.SIGKILL)


# --------------------------------------------------------------------------- state records


class RecordedRequest(NamedTuple):
    """One request as the fake received it (headers keep the Authorization value)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


@dataclass
class _WatchEvent:
    rv: int
    type: str
    namespace: str
    obj: Obj
    line: bytes


@dataclass(eq=False)
class _Watcher:
    namespace: str | None
    matches: Callable[[Obj], bool]
    queue: asyncio.Queue[_WatchEvent | str] = field(default_factory=asyncio.Queue)

    def accepts(self, event: _WatchEvent) -> bool:
        if self.namespace is not None and event.namespace != self.namespace:
            return False
        return self.matches(event.obj)


@dataclass(eq=False)
class _Container:
    name: str
    spec: Obj
    main: LocalProcess | None = None
    attached: set[_StreamHandler] = field(default_factory=set)
    log: bytearray = field(default_factory=bytearray)
    killed: bool = False
    container_id: str = field(default_factory=lambda: "containerd://" + secrets.token_hex(32))

    @property
    def attach_mode(self) -> bool:
        return bool(self.spec.get("stdin")) and bool(self.spec.get("tty"))


@dataclass(eq=False)
class _PodRuntime:
    key: str
    workdir: Path
    containers: dict[str, _Container]
    timers: list[asyncio.TimerHandle] = field(default_factory=list)
    execs: set[LocalProcess] = field(default_factory=set)
    pgids: set[int] = field(default_factory=set)
    terminating: asyncio.Task[None] | None = None
    #: Faults as they were when the pod was created (so toggling them later is not racy).
    unschedulable: bool = False
    pull_errors: tuple[str, ...] = ()


# --------------------------------------------------------------------------- the server


class FakeKubeAPI:
    """An in-memory Kubernetes API server on 127.0.0.1 for the real clients.

    Constructor (all keyword-only):

    * ``token`` - the bearer token accepted (a different one gets 401);
    * ``protocols`` - exec/attach subprotocols in preference order (offer v4 only to test
      client fallback); no match rejects the upgrade with 400;
    * ``validate`` - schema + apiserver validation of created pods (422 Invalid);
    * ``exec_prefix`` - argv prepended to every spawned process (e.g. a bwrap sandbox);
    * ``schedule_delay`` / ``create_delay`` / ``start_delay`` - lifecycle step delays (s);
    * ``history_size`` - watch events kept for resumption (older -> 410 Expired);
    * ``namespaces`` - namespaces that exist (``write_kubeconfig`` adds its own);
    * ``user`` - the identity named in 403 Forbidden messages;
    * ``workdir_base`` - where pod directories go (default: a temp dir removed on stop);
    * ``max_grace_seconds`` - cap on the real wait of a graceful deletion;
    * ``default_command`` - argv of an attach-mode container without ``command``;
    * ``exit_drain_seconds`` - how long to wait for output after a process exits when a
      background child still holds its terminal;
    * ``kubernetes_version`` - served by ``/version`` and used for schema validation;
    * ``node_images`` - the ``names`` of each ``status.images`` entry of the one node;
    * ``kubernetes_service_env`` - give every exec ``KUBERNETES_SERVICE_HOST``/``_PORT``
      pointing at this fake (as the kubelet points them at the ``kubernetes`` Service).

    Observation (all updated before the response or event that reveals them):
    ``pods`` (``"ns/name"`` -> live pod dict), ``created_bodies``, ``requests``
    (``RecordedRequest(method, path, query: dict[str, list[str]], headers)``), ``events``,
    ``namespaces``, ``pod(name)``, ``pod_dir(name)``, ``live_processes()``,
    ``live_websockets()``, ``live_watches()``, ``summary()``, ``await wait_for(predicate)``,
    ``await wait_for_phase(name, phase)``.
    """

    def __init__(
        self,
        *,
        token: str = "fake-token",
        protocols: Sequence[str] = (V5_PROTOCOL, V4_PROTOCOL),
        validate: bool = True,
        exec_prefix: Sequence[str] | None = None,
        schedule_delay: float = 0.01,
        create_delay: float = 0.01,
        start_delay: float = 0.01,
        history_size: int = 1000,
        namespaces: Iterable[str] = ("default",),
        user: str = DEFAULT_USER,
        workdir_base: str | os.PathLike[str] | None = None,
        max_grace_seconds: float | None = None,
        default_command: Sequence[str] = ("/bin/sh",),
        exit_drain_seconds: float = 0.2,
        kubernetes_version: str = "1.34.0",
        node_images: Iterable[Sequence[str]] = (),
        kubernetes_service_env: bool = False,
    ) -> None:
        self.token = token
        self.protocols = tuple(protocols)
        self.validate = validate
        self.exec_prefix = list(exec_prefix or [])
        self.schedule_delay = schedule_delay
        self.create_delay = create_delay
        self.start_delay = start_delay
        self.max_grace_seconds = max_grace_seconds
        self.default_command = list(default_command)
        self.exit_drain_seconds = exit_drain_seconds
        self.kubernetes_version = kubernetes_version
        #: ``names`` of each image the node reports in ``status.images`` (mutable).
        self.node_images: list[list[str]] = [list(names) for names in node_images]
        self.kubernetes_service_env = kubernetes_service_env
        self.faults = Faults(user, on_schedulable=self._retry_scheduling)

        #: ``"namespace/name"`` -> the current pod object (live; do not mutate).
        self.pods: dict[str, Obj] = {}
        #: Every JSON body POSTed to a pods collection, in order, as sent.
        self.created_bodies: list[Obj] = []
        #: Every request received (websocket upgrades included).
        self.requests: list[RecordedRequest] = []
        #: Events the fake scheduler/kubelet recorded (also served by the events API).
        self.events: list[Obj] = []
        self.namespaces: dict[str, Obj] = {}
        self.default_namespace = "default"
        self.port = 0

        self._rv = 0
        self._history: deque[_WatchEvent] = deque(maxlen=max(1, history_size))
        self._floor = 0
        self._watchers: set[_Watcher] = set()
        self._runtimes: dict[str, _PodRuntime] = {}
        self._procs: set[LocalProcess] = set()
        self._websockets: set[_StreamHandler] = set()
        self._change = asyncio.Event()
        self._server: tornado.httpserver.HTTPServer | None = None
        self._closing: asyncio.Task[None] | None = None
        self._workdir_base = Path(workdir_base) if workdir_base else None
        self._own_workdir: Path | None = None
        self._pod_ip = 0
        self._stopped = False
        for namespace in namespaces:
            self.add_namespace(namespace)

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Listen on an ephemeral 127.0.0.1 port on the running loop."""
        if self._workdir_base is None:
            self._own_workdir = Path(tempfile.mkdtemp(prefix="fake-kube-"))
            self._workdir_base = self._own_workdir
        self._workdir_base.mkdir(parents=True, exist_ok=True)
        self._listen(0)
        log.info("fake Kubernetes API listening on %s", self.url)

    def _listen(self, port: int) -> None:
        sockets = tornado.netutil.bind_sockets(port, "127.0.0.1")
        self.port = sockets[0].getsockname()[1]
        self._server = tornado.httpserver.HTTPServer(self._make_app())
        self._server.add_sockets(sockets)

    async def stop(self) -> None:
        """Close the listener, every connection and websocket; kill every pod process."""
        if self._stopped:
            return
        self._stopped = True
        for runtime in self._runtimes.values():
            for timer in runtime.timers:
                timer.cancel()
            if runtime.terminating is not None:
                runtime.terminating.cancel()
        self._drop_connections()
        if self._closing is not None:
            await self._closing
        procs = list(self._procs)
        for proc in procs:
            proc.signal(signal.SIGKILL)
        for runtime in self._runtimes.values():
            self._kill_groups(runtime)
        if procs:
            await asyncio.wait([p.exited for p in procs], timeout=5)
        if self._own_workdir is not None:
            shutil.rmtree(self._own_workdir, ignore_errors=True)
        else:
            for runtime in self._runtimes.values():
                shutil.rmtree(runtime.workdir, ignore_errors=True)
        self._changed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def go_down(self) -> None:
        """Become unreachable: stop listening, drop every connection and websocket.

        The simulated cluster keeps running (pods keep their lifecycle and processes).
        """
        self._drop_connections()

    async def come_back(self) -> None:
        """Listen again on the same port after ``go_down``."""
        if self._closing is not None:
            await self._closing
            self._closing = None
        self._listen(self.port)

    def _drop_connections(self) -> None:
        server, self._server = self._server, None
        for watcher in list(self._watchers):
            watcher.queue.put_nowait("abort")
        for handler in list(self._websockets):
            handler.abort()
        if server is not None:
            server.stop()
            self._closing = asyncio.ensure_future(server.close_all_connections())

    def write_kubeconfig(
        self,
        path: str | os.PathLike[str],
        namespace: str = "sandboxes",
        token: str | None = None,
    ) -> Path:
        """Write a kubeconfig (bearer-token user, context namespace); creates the namespace."""
        import yaml  # a test dependency, only needed here

        self.add_namespace(namespace)
        self.default_namespace = namespace
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake-user", "user": {"token": token or self.token}}],
            "contexts": [
                {
                    "name": "fake",
                    "context": {"cluster": "fake", "user": "fake-user", "namespace": namespace},
                }
            ],
            "current-context": "fake",
            "preferences": {},
        }
        target = Path(path)
        target.write_text(yaml.safe_dump(config, sort_keys=False))
        return target

    def add_namespace(self, name: str, labels: Mapping[str, str] | None = None) -> None:
        """Create namespace ``name``; ``labels`` are added (also to an existing one)."""
        if name in self.namespaces:
            if labels:
                self._rv += 1
                meta = self.namespaces[name]["metadata"]
                meta["labels"].update(labels)
                meta["resourceVersion"] = str(self._rv)
            return
        self._rv += 1
        self.namespaces[name] = {
            "kind": "Namespace",
            "apiVersion": "v1",
            "metadata": {
                "name": name,
                "uid": str(uuid.uuid4()),
                "resourceVersion": str(self._rv),
                "creationTimestamp": _now(),
                "labels": {"kubernetes.io/metadata.name": name, **(labels or {})},
            },
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        }

    # ------------------------------------------------------------------ observation

    def _changed(self) -> None:
        """Wake every ``wait_for``; called on each state change."""
        event, self._change = self._change, asyncio.Event()
        event.set()

    async def wait_for(
        self, predicate: Callable[[FakeKubeAPI], Any], timeout: float = 10, what: str = ""
    ) -> Any:
        """Return ``predicate(self)`` once truthy, re-checking after every state change."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = predicate(self)
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(
                    f"FakeKubeAPI.wait_for({what or getattr(predicate, '__name__', predicate)}) "
                    f"still false after {timeout} s; pods: {self.summary()}; "
                    f"processes: {self.live_processes()}; websockets: {self.live_websockets()}"
                )
            change = self._change
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(change.wait(), remaining)

    async def wait_for_phase(
        self, name: str, phase: str, namespace: str | None = None, timeout: float = 10
    ) -> Obj:
        """Wait until the pod has ``status.phase == phase`` and return it."""
        key = f"{namespace or self.default_namespace}/{name}"
        return await self.wait_for(  # type: ignore[no-any-return]
            lambda api: (pod := api.pods.get(key)) and pod["status"].get("phase") == phase and pod,
            timeout,
            what=f"{key} phase {phase}",
        )

    def pod(self, name: str, namespace: str | None = None) -> Obj:
        """The current pod object (KeyError if absent)."""
        return self.pods[f"{namespace or self.default_namespace}/{name}"]

    def pod_dir(self, name: str, namespace: str | None = None) -> Path:
        """The local directory standing in for the pod's filesystem (HOME, default cwd)."""
        return self._runtimes[f"{namespace or self.default_namespace}/{name}"].workdir

    def live_processes(self) -> int:
        """Processes spawned for pods (main or exec) that have not been reaped yet."""
        return len(self._procs)

    def live_websockets(self) -> int:
        """Open exec/attach websockets."""
        return len(self._websockets)

    def live_watches(self) -> int:
        """Open watch streams."""
        return len(self._watchers)

    def summary(self) -> dict[str, str]:
        """``key -> phase (container states)``, for failure messages."""
        out: dict[str, str] = {}
        for key, pod in self.pods.items():
            states = []
            for container_status in pod["status"].get("containerStatuses") or []:
                state = container_status.get("state") or {}
                kind = next(iter(state), "?")
                reason = (state.get(kind) or {}).get("reason")
                states.append(f"{kind}:{reason}" if reason else kind)
            deleting = " deleting" if pod["metadata"].get("deletionTimestamp") else ""
            out[key] = f"{pod['status'].get('phase')}{deleting} {states}"
        return out

    # ------------------------------------------------------------------ watch plumbing

    def _emit(self, event_type: str, pod: Obj) -> None:
        """Bump the resourceVersion, record the event in the history and fan it out."""
        self._rv += 1
        pod["metadata"]["resourceVersion"] = str(self._rv)
        obj = copy.deepcopy(pod)
        line = (json.dumps({"type": event_type, "object": obj}) + "\n").encode()
        event = _WatchEvent(self._rv, event_type, pod["metadata"]["namespace"], obj, line)
        if self._history.maxlen is not None and len(self._history) == self._history.maxlen:
            self._floor = self._history[0].rv
        self._history.append(event)
        for watcher in self._watchers:
            if watcher.accepts(event):
                watcher.queue.put_nowait(event)
        self._changed()

    def expire_watches(self) -> None:
        """Compact: end open watches with a 410 Expired ERROR event, forget the history.

        A client resuming from any resourceVersion it has seen gets 410 and must relist;
        the resourceVersion of that new list is valid again.
        """
        self._rv += 1
        self._floor = self._rv
        self._history.clear()
        for watcher in list(self._watchers):
            watcher.queue.put_nowait("expire")
        self._changed()

    def _expired_line(self, resource_version: int | str) -> bytes:
        status = status_body(
            410, "Expired", f"too old resource version: {resource_version} ({self._floor})"
        )
        return (json.dumps({"type": "ERROR", "object": status}) + "\n").encode()

    # ------------------------------------------------------------------ pods: API operations

    def _key(self, namespace: str, name: str) -> str:
        return f"{namespace}/{name}"

    def _get_pod(self, namespace: str, name: str) -> Obj:
        pod = self.pods.get(self._key(namespace, name))
        if pod is None:
            raise _not_found(name)
        return pod

    def _list_pods(self, namespace: str | None, matches: Callable[[Obj], bool]) -> Obj:
        items = []
        for pod in sorted(
            self.pods.values(), key=lambda p: (p["metadata"]["namespace"], p["metadata"]["name"])
        ):
            if namespace is not None and pod["metadata"]["namespace"] != namespace:
                continue
            if matches(pod):
                item = copy.deepcopy(pod)
                item.pop("kind", None)
                item.pop("apiVersion", None)
                items.append(item)
        return {
            "kind": "PodList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": str(self._rv)},
            "items": items,
        }

    def _create_pod(self, namespace: str, body: Obj, *, dry_run: bool, strict: bool) -> Obj:
        """Admission, validation and storage of a new pod, in the real server's order."""
        if body.get("kind") not in (None, "Pod") or body.get("apiVersion") not in (None, "v1"):
            raise _bad_request(
                f"the API version in the data ({body.get('apiVersion')}) does not match the "
                "expected API version (v1)"
                if body.get("apiVersion") not in (None, "v1")
                else f'Pod in version "v1" cannot be handled as a Pod: unexpected kind {body.get("kind")}'
            )
        meta = body.get("metadata")
        if not isinstance(meta, dict):
            meta = {}
        if meta.get("namespace") not in (None, "", namespace):
            raise _bad_request(
                "the namespace of the provided object does not match the namespace sent on "
                "the request"
            )
        name = meta.get("name") or ""
        if not name and meta.get("generateName"):
            alphabet = "bcdfghjklmnpqrstvwxz2456789"
            name = meta["generateName"] + "".join(secrets.choice(alphabet) for _ in range(5))
        if not name:
            raise invalid_error(
                "Pod",
                "",
                [
                    FieldError(
                        "FieldValueRequired",
                        "metadata.name",
                        "Required value: name or generateName is required",
                    )
                ],
            )
        if namespace not in self.namespaces:
            raise _not_found(namespace, "namespaces")
        if self.faults.invalid_next:
            message = self.faults.invalid_next.pop(0)
            raise ApiError(
                422,
                "Invalid",
                f'Pod "{name}" is invalid: {message}',
                {
                    "name": name,
                    "kind": "Pod",
                    "causes": [{"reason": "FieldValueInvalid", "message": message}],
                },
            )
        candidate = copy.deepcopy(body)
        candidate.setdefault("apiVersion", "v1")
        candidate.setdefault("kind", "Pod")
        candidate.setdefault("metadata", {})["name"] = name
        if self.validate:
            errors = schema_errors(candidate, self.kubernetes_version, strict=strict)
            errors = errors or semantic_errors(candidate)
            if errors:
                raise invalid_error("Pod", name, errors)
        if self.faults.quota is not None:
            quota, used, limit = self.faults.quota
            raise ApiError(
                403,
                "Forbidden",
                f'pods "{name}" is forbidden: exceeded quota: {quota}, requested: pods=1, '
                f"used: pods={used}, limited: pods={limit}",
                {"name": name, "kind": "pods"},
            )
        key = self._key(namespace, name)
        if key in self.pods:
            raise ApiError(
                409,
                "AlreadyExists",
                f'pods "{name}" already exists',
                {"name": name, "kind": "pods"},
            )
        pod = self._materialise(candidate, namespace)
        if dry_run:
            pod["metadata"]["resourceVersion"] = str(self._rv)
            return pod
        self.pods[key] = pod
        workdir = Path(tempfile.mkdtemp(prefix=f"{namespace}-{name}-", dir=self._workdir_base))
        containers = {c["name"]: _Container(c["name"], c) for c in pod["spec"]["containers"]}
        self._runtimes[key] = _PodRuntime(
            key,
            workdir,
            containers,
            unschedulable=self.faults.unschedulable,
            pull_errors=tuple(self.faults.image_pull_errors),
        )
        self._emit("ADDED", pod)
        self._later(key, self.schedule_delay, self._step_schedule, key)
        return copy.deepcopy(pod)

    def _materialise(self, body: Obj, namespace: str) -> Obj:
        """The stored object: server-set metadata, defaulted spec, initial status."""
        pod = copy.deepcopy(body)
        meta = pod["metadata"]
        meta["namespace"] = namespace
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        meta.pop("resourceVersion", None)
        spec = pod.setdefault("spec", {})
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("dnsPolicy", "ClusterFirst")
        spec.setdefault("securityContext", {})
        spec.setdefault("schedulerName", "default-scheduler")
        spec.setdefault("serviceAccountName", "default")
        spec.setdefault("serviceAccount", spec["serviceAccountName"])
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
        spec.setdefault("priority", 0)
        spec.setdefault(
            "tolerations",
            [
                {
                    "key": f"node.kubernetes.io/{taint}",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                }
                for taint in ("not-ready", "unreachable")
            ],
        )
        spec.setdefault("containers", [])
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            _, tag = _split_tag(str(container.get("image", "")).partition("@")[0])
            container.setdefault(
                "imagePullPolicy", "Always" if tag in ("", "latest") else "IfNotPresent"
            )
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("terminationMessagePolicy", "File")
            container.setdefault("resources", {})
        pod["status"] = {"phase": "Pending", "qosClass": _qos_class(spec["containers"])}
        return pod

    def _delete_pod(self, namespace: str, name: str, grace: int | None, dry_run: bool) -> Obj:
        """Graceful deletion: deletionTimestamp + MODIFIED, terminate, then DELETED."""
        key = self._key(namespace, name)
        pod = self._get_pod(namespace, name)
        if dry_run:
            return copy.deepcopy(pod)
        runtime = self._runtimes[key]
        if grace is None:
            grace = int(pod["spec"].get("terminationGracePeriodSeconds", 30))
        unscheduled = not pod["spec"].get("nodeName")
        if grace <= 0 or unscheduled or pod["status"].get("phase") in _TERMINAL_PHASES:
            # Nothing (no kubelet, or nothing running) has to confirm: gone at once.
            return self._finalize_delete(key)
        if pod["metadata"].get("deletionTimestamp"):
            return copy.deepcopy(pod)
        pod["metadata"]["deletionTimestamp"] = _now(grace)
        pod["metadata"]["deletionGracePeriodSeconds"] = grace
        self._emit("MODIFIED", pod)
        for timer in runtime.timers:
            timer.cancel()
        runtime.timers.clear()
        runtime.terminating = asyncio.ensure_future(self._terminate(key, grace))
        return copy.deepcopy(pod)

    async def _terminate(self, key: str, grace: float) -> None:
        """SIGTERM main processes, SIGKILL everything after the grace period, then remove."""
        runtime = self._runtimes.get(key)
        if runtime is None:
            return
        wait = grace if self.max_grace_seconds is None else min(grace, self.max_grace_seconds)
        mains = [c.main for c in runtime.containers.values() if c.main is not None and c.main.alive]
        for proc in mains:
            proc.signal(signal.SIGTERM)
        if mains:
            await asyncio.wait([p.exited for p in mains], timeout=wait)
        # The container (and its PID namespace) is gone: every exec dies with it.
        procs = [p for p in [*mains, *runtime.execs] if p.alive]
        for proc in procs:
            proc.signal(signal.SIGKILL)
        self._kill_groups(runtime)
        if procs:
            await asyncio.wait([p.exited for p in procs], timeout=5)
        pod = self.pods.get(key)
        if pod is None:
            return
        finished = _now()
        for status in pod["status"].get("containerStatuses") or []:
            state = status.get("state") or {}
            if "terminated" in state:
                continue
            started = (state.get("running") or {}).get("startedAt")
            # An idle container (``sleep infinity`` stand-in) exits promptly on SIGTERM.
            status["state"] = {
                "terminated": {
                    "exitCode": 0,
                    "reason": "Completed",
                    "startedAt": started,
                    "finishedAt": finished,
                    "containerID": status.get("containerID"),
                }
            }
            status["ready"] = False
            status["started"] = False
        self._set_terminal_phase(pod)
        self._emit("MODIFIED", pod)
        runtime.terminating = None
        self._finalize_delete(key)

    def _finalize_delete(self, key: str) -> Obj:
        pod = self.pods.pop(key)
        runtime = self._runtimes.pop(key)
        for timer in runtime.timers:
            timer.cancel()
        if runtime.terminating is not None and runtime.terminating is not asyncio.current_task():
            runtime.terminating.cancel()
        for container in runtime.containers.values():
            container.killed = True
            if container.main is not None and container.main.alive:
                container.main.signal(signal.SIGKILL)
            elif container.main is None:
                for handler in list(container.attached):
                    handler.finish_with_status(exit_status(0, []))
        for proc in runtime.execs:
            proc.signal(signal.SIGKILL)
        self._kill_groups(runtime)
        self._emit("DELETED", pod)
        shutil.rmtree(runtime.workdir, ignore_errors=True)
        return copy.deepcopy(pod)

    def _kill_groups(self, runtime: _PodRuntime) -> None:
        """Everything started for the pod dies with its container, background jobs too."""
        kill_sessions(runtime.pgids)

    def _patch_pod(self, namespace: str, name: str, content_type: str, patch: Any) -> Obj:
        """Merge / strategic-merge / JSON patch; only labels and annotations may change."""
        pod = self._get_pod(namespace, name)
        if content_type == "application/json-patch+json":
            if not isinstance(patch, list):
                raise _bad_request(
                    "json: cannot unmarshal object into Go value of type jsonpatch.Patch"
                )
            patched = _apply_json_patch(pod, patch)
        else:
            if not isinstance(patch, dict):
                raise _bad_request(
                    "json: cannot unmarshal array into Go value of type map[string]interface {}"
                )
            patched = _merge_patch(pod, patch)
        if patched.get("spec") != pod.get("spec"):
            raise invalid_error(
                "Pod",
                name,
                [
                    FieldError(
                        "FieldValueForbidden",
                        "spec",
                        "Forbidden: pod updates may not change fields other than "
                        "`spec.containers[*].image`,`spec.initContainers[*].image`,"
                        "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to "
                        "existing tolerations),`spec.terminationGracePeriodSeconds` (allow it "
                        "to be set to 1 if it was previously negative)",
                    )
                ],
            )
        new_meta = patched.get("metadata") or {}
        errors = _check_labels(new_meta.get("labels"), "metadata.labels")
        if errors:
            raise invalid_error("Pod", name, errors)
        for field_name in ("labels", "annotations"):
            if new_meta.get(field_name):
                pod["metadata"][field_name] = new_meta[field_name]
            else:
                pod["metadata"].pop(field_name, None)
        self._emit("MODIFIED", pod)
        return copy.deepcopy(pod)

    # ------------------------------------------------------------------ simulated node

    def _later(self, key: str, delay: float, callback: Callable[..., None], *args: Any) -> None:
        runtime = self._runtimes.get(key)
        if runtime is None:
            return
        runtime.timers = [t for t in runtime.timers if not t.cancelled()]
        runtime.timers.append(asyncio.get_running_loop().call_later(delay, callback, *args))

    def _live_pod(self, key: str) -> Obj | None:
        """The pod if the simulated node should still act on it."""
        pod = self.pods.get(key)
        if pod is None or pod["metadata"].get("deletionTimestamp") or self._stopped:
            return None
        return pod

    def _record_event(
        self, pod: Obj, reason: str, message: str, kind: str = "Normal", component: str = "kubelet"
    ) -> None:
        self._rv += 1
        meta = pod["metadata"]
        now = _now()
        self.events.append(
            {
                "metadata": {
                    "name": f"{meta['name']}.{secrets.token_hex(8)}",
                    "namespace": meta["namespace"],
                    "uid": str(uuid.uuid4()),
                    "resourceVersion": str(self._rv),
                    "creationTimestamp": now,
                },
                "involvedObject": {
                    "kind": "Pod",
                    "namespace": meta["namespace"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "apiVersion": "v1",
                    "resourceVersion": meta.get("resourceVersion", ""),
                },
                "reason": reason,
                "message": message,
                "source": {"component": component, "host": NODE_NAME}
                if component == "kubelet"
                else {"component": component},
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
                "type": kind,
                "eventTime": None,
                "reportingComponent": component,
                "reportingInstance": NODE_NAME if component == "kubelet" else "",
            }
        )

    def _step_schedule(self, key: str) -> None:
        pod = self._live_pod(key)
        if pod is None:
            return
        now = _now()
        if self._runtimes[key].unschedulable:
            message = (
                "0/1 nodes are available: 1 Insufficient memory. preemption: 0/1 nodes are "
                "available: 1 No preemption victims found for incoming pod."
            )
            pod["status"]["conditions"] = [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "lastProbeTime": None,
                    "lastTransitionTime": now,
                    "reason": "Unschedulable",
                    "message": message,
                }
            ]
            self._record_event(pod, "FailedScheduling", message, "Warning", "default-scheduler")
            self._emit("MODIFIED", pod)
            return
        pod["spec"]["nodeName"] = NODE_NAME
        pod["status"]["conditions"] = [
            {
                "type": "PodScheduled",
                "status": "True",
                "lastProbeTime": None,
                "lastTransitionTime": now,
            }
        ]
        meta = pod["metadata"]
        self._record_event(
            pod,
            "Scheduled",
            f"Successfully assigned {meta['namespace']}/{meta['name']} to {NODE_NAME}",
            component="default-scheduler",
        )
        self._emit("MODIFIED", pod)
        self._later(key, self.create_delay, self._step_create, key)

    def _step_create(self, key: str) -> None:
        pod = self._live_pod(key)
        if pod is None:
            return
        now = _now()
        names = [c["name"] for c in pod["spec"]["containers"]]
        unready = f"containers with unready status: [{' '.join(names)}]"
        status = pod["status"]
        status.update(
            {
                "conditions": _conditions(
                    now,
                    ready_to_start=False,
                    initialized=True,
                    ready=False,
                    reason="ContainersNotReady",
                    message=unready,
                ),
                "hostIP": HOST_IP,
                "hostIPs": [{"ip": HOST_IP}],
                "startTime": now,
                "containerStatuses": [
                    _container_status(
                        c, {"waiting": {"reason": "ContainerCreating"}}, ready=False, image_id=""
                    )
                    for c in pod["spec"]["containers"]
                ],
            }
        )
        self._emit("MODIFIED", pod)
        failing = [c for c in pod["spec"]["containers"] if self._pull_fails(key, c["image"])]
        if failing:
            self._later(key, self.create_delay, self._step_pull_error, key, 0)
        else:
            self._later(key, self.start_delay, self._step_start, key)

    def _pull_fails(self, key: str, image: str) -> bool:
        return any(s in image for s in self._runtimes[key].pull_errors)

    def _retry_scheduling(self) -> None:
        """Capacity appeared: schedule the pods that were left Unschedulable."""
        for key, runtime in self._runtimes.items():
            pod = self.pods.get(key)
            if runtime.unschedulable and pod is not None and not pod["spec"].get("nodeName"):
                runtime.unschedulable = False
                self._later(key, self.schedule_delay, self._step_schedule, key)

    def _step_pull_error(self, key: str, stage: int) -> None:
        pod = self._live_pod(key)
        if pod is None:
            return
        for spec, status in zip(
            pod["spec"]["containers"], pod["status"]["containerStatuses"], strict=True
        ):
            if not self._pull_fails(key, spec["image"]):
                continue
            ref = normalise_image(spec["image"])
            pull_error = (
                f'rpc error: code = NotFound desc = failed to pull and unpack image "{ref}": '
                f'failed to resolve reference "{ref}": {ref}: not found'
            )
            if stage == 0:
                waiting = {"reason": "ErrImagePull", "message": pull_error}
                self._record_event(
                    pod,
                    "Failed",
                    f'Failed to pull image "{spec["image"]}": {pull_error}',
                    "Warning",
                )
            else:
                waiting = {
                    "reason": "ImagePullBackOff",
                    "message": f'Back-off pulling image "{spec["image"]}": ErrImagePull: {pull_error}',
                }
                self._record_event(
                    pod, "BackOff", f'Back-off pulling image "{spec["image"]}"', "Warning"
                )
            status["state"] = {"waiting": waiting}
        self._emit("MODIFIED", pod)
        if stage == 0:
            self._later(key, self.create_delay, self._step_pull_error, key, 1)

    def _step_start(self, key: str) -> None:
        pod = self._live_pod(key)
        runtime = self._runtimes.get(key)
        if pod is None or runtime is None:
            return
        now = _now()
        statuses = []
        failed = False
        for spec in pod["spec"]["containers"]:
            container = runtime.containers[spec["name"]]
            error = self._start_main(pod, runtime, container) if container.attach_mode else None
            if error is None:
                state: Obj = {"running": {"startedAt": now}}
                statuses.append(
                    _container_status(spec, state, ready=True, container_id=container.container_id)
                )
                self._record_event(
                    pod, "Pulled", f'Container image "{spec["image"]}" already present on machine'
                )
                self._record_event(pod, "Created", f"Created container: {spec['name']}")
                self._record_event(pod, "Started", f"Started container {spec['name']}")
            else:
                failed = True
                container.killed = True
                state = {
                    "terminated": {
                        "exitCode": 128,
                        "reason": "StartError",
                        "message": error,
                        "startedAt": "1970-01-01T00:00:00Z",
                        "finishedAt": now,
                        "containerID": container.container_id,
                    }
                }
                statuses.append(
                    _container_status(spec, state, ready=False, container_id=container.container_id)
                )
                self._record_event(pod, "Failed", f"Error: {error}", "Warning")
        self._pod_ip += 1
        ip = f"10.244.0.{self._pod_ip % 250 + 2}"
        status = pod["status"]
        status.update({"podIP": ip, "podIPs": [{"ip": ip}], "containerStatuses": statuses})
        if pod["spec"].get("initContainers"):
            status["initContainerStatuses"] = [
                _container_status(
                    c,
                    {
                        "terminated": {
                            "exitCode": 0,
                            "reason": "Completed",
                            "startedAt": now,
                            "finishedAt": now,
                        }
                    },
                    ready=True,
                )
                for c in pod["spec"]["initContainers"]
            ]
        if failed:
            self._set_terminal_phase(pod)
        else:
            status["phase"] = "Running"
            status["conditions"] = _conditions(
                now, ready_to_start=True, initialized=True, ready=True
            )
        self._emit("MODIFIED", pod)

    def _container_env(
        self, pod: Obj, runtime: _PodRuntime, spec: Obj, tty: bool
    ) -> dict[str, str]:
        """A minimal environment with the container's ``env`` merged over it."""
        env = {
            "PATH": os.environ.get(
                "PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
            ),
            "HOME": str(runtime.workdir),
            "TERM": "xterm-256color",
            "HOSTNAME": pod["metadata"]["name"],
        }
        if self.kubernetes_service_env:
            env["KUBERNETES_SERVICE_HOST"] = "127.0.0.1"
            env["KUBERNETES_SERVICE_PORT"] = str(self.port)
        declared: dict[str, str] = {}
        for item in spec.get("env") or []:
            if "value" in item or "valueFrom" not in item:
                value = _expand_env_value(str(item.get("value") or ""), declared)
                env[item["name"]] = declared[item["name"]] = value
                continue
            field_ref = (item.get("valueFrom") or {}).get("fieldRef")
            if field_ref:  # secretKeyRef & co. are not simulated: the variable is omitted
                env[item["name"]] = _get_path(pod, field_ref.get("fieldPath", ""))
        return env

    def _cwd(self, runtime: _PodRuntime, spec: Obj) -> str:
        working_dir = spec.get("workingDir")
        if working_dir and Path(working_dir).is_dir():
            return str(working_dir)
        return str(runtime.workdir)

    def _spawn(
        self,
        runtime: _PodRuntime,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str,
        tty: bool,
        stdin: bool,
        on_output: Callable[[int, bytes], None],
        on_exit: Callable[[int], None],
    ) -> LocalProcess:
        proc: LocalProcess

        def exited(code: int) -> None:
            self._procs.discard(proc)
            runtime.execs.discard(proc)
            self._changed()
            on_exit(code)

        proc = LocalProcess(
            [*self.exec_prefix, *argv],
            env=env,
            cwd=cwd,
            tty=tty,
            stdin=stdin,
            on_output=on_output,
            on_exit=exited,
            exit_drain=self.exit_drain_seconds,
        )
        proc.start()
        self._procs.add(proc)
        runtime.pgids.add(proc.pid)
        self._changed()
        return proc

    def _start_main(self, pod: Obj, runtime: _PodRuntime, container: _Container) -> str | None:
        """Run an attach-mode container's argv under a PTY; an error text if it cannot."""
        spec = container.spec
        argv = [*(spec.get("command") or self.default_command), *(spec.get("args") or [])]

        def output(_channel: int, data: bytes) -> None:
            container.log += data
            if len(container.log) > _LOG_LIMIT:
                del container.log[: len(container.log) - _LOG_LIMIT]
            for handler in list(container.attached):
                handler.send_channel(STDOUT, data)

        try:
            container.main = self._spawn(
                runtime,
                argv,
                env=self._container_env(pod, runtime, spec, tty=True),
                cwd=self._cwd(runtime, spec),
                tty=True,
                stdin=True,
                on_output=output,
                on_exit=lambda code: self._on_main_exit(runtime.key, container, code),
            )
        except OSError as exc:
            return (
                "failed to create containerd task: failed to create shim task: OCI runtime "
                "create failed: runc create failed: unable to start container process: error "
                f'during container init: exec: "{argv[0]}": {exc.strerror}: unknown'
            )
        return None

    def _on_main_exit(self, key: str, container: _Container, code: int) -> None:
        """The container's main process ended: terminated state, maybe a terminal phase."""
        argv = container.main.argv if container.main is not None else []
        for handler in list(container.attached):
            handler.finish_with_status(exit_status(code, argv))
        pod = self.pods.get(key)
        runtime = self._runtimes.get(key)
        if pod is None or runtime is None or container.killed:
            return
        for status in pod["status"].get("containerStatuses") or []:
            if status["name"] != container.name:
                continue
            started = (status["state"].get("running") or {}).get("startedAt")
            status["state"] = {
                "terminated": {
                    "exitCode": code,
                    "reason": "Completed" if code == 0 else "Error",
                    "startedAt": started,
                    "finishedAt": _now(),
                    "containerID": container.container_id,
                }
            }
            status["ready"] = False
            status["started"] = False
        container.killed = True
        all_done = all(c.killed for c in runtime.containers.values())
        if all_done:
            self._set_terminal_phase(pod)
            for proc in list(runtime.execs):
                proc.signal(signal.SIGKILL)
        else:
            names = [s["name"] for s in pod["status"]["containerStatuses"] if not s["ready"]]
            pod["status"]["conditions"] = _conditions(
                _now(),
                ready_to_start=True,
                initialized=True,
                ready=False,
                reason="ContainersNotReady",
                message=f"containers with unready status: [{' '.join(names)}]",
            )
        self._emit("MODIFIED", pod)

    def _set_terminal_phase(self, pod: Obj) -> None:
        codes = [
            (s.get("state") or {}).get("terminated", {}).get("exitCode", 0)
            for s in pod["status"].get("containerStatuses") or []
        ]
        phase = "Succeeded" if all(c == 0 for c in codes) else "Failed"
        reason = "PodCompleted" if phase == "Succeeded" else "PodFailed"
        pod["status"]["phase"] = phase
        pod["status"]["conditions"] = _conditions(
            _now(), ready_to_start=False, initialized=True, ready=False, reason=reason
        )

    def kill_pod(
        self,
        name: str,
        reason: str = "OOMKilled",
        exit_code: int = 137,
        namespace: str | None = None,
    ) -> None:
        """The node kills the pod's containers (OOM, eviction...): Failed, processes gone.

        Exec streams then end as the kubelet's do when the process dies: a channel-3
        NonZeroExitCode status with exit code 137 (SIGKILL), then close 1000. Attach
        streams get the main process's exit status the same way.
        """
        key = self._key(namespace or self.default_namespace, name)
        pod = self.pods[key]
        runtime = self._runtimes[key]
        for timer in runtime.timers:
            timer.cancel()
        runtime.timers.clear()
        finished = _now()
        for status in pod["status"].get("containerStatuses") or []:
            started = (status.get("state", {}).get("running") or {}).get("startedAt")
            status["state"] = {
                "terminated": {
                    "exitCode": exit_code,
                    "reason": reason,
                    "startedAt": started,
                    "finishedAt": finished,
                    "containerID": status.get("containerID"),
                }
            }
            status["ready"] = False
            status["started"] = False
        pod["status"]["phase"] = "Failed"
        pod["status"]["conditions"] = _conditions(
            finished, ready_to_start=False, initialized=True, ready=False, reason="PodFailed"
        )
        self._record_event(pod, "Killing", f"Stopping container ({reason})", "Warning")
        self._emit("MODIFIED", pod)
        for container in runtime.containers.values():
            container.killed = True
            if container.main is not None and container.main.alive:
                container.main.signal(signal.SIGKILL)
            elif container.main is None:
                for handler in list(container.attached):
                    handler.finish_with_status(exit_status(exit_code, []))
        for proc in list(runtime.execs):
            proc.signal(signal.SIGKILL)
        self._kill_groups(runtime)

    # ------------------------------------------------------------------ app

    def _make_app(self) -> tornado.web.Application:
        pod = r"/api/v1/namespaces/([^/]+)/pods/([^/]+)"
        args = {"api": self}
        return tornado.web.Application(
            [
                (r"/version/?", _VersionHandler, args),
                (r"/api/?", _ApiVersionsHandler, args),
                (r"/apis/?", _ApiGroupsHandler, args),
                (r"/api/v1/?", _ResourceListHandler, args),
                (r"/api/v1/namespaces/?", _NamespacesHandler, args),
                (r"/api/v1/namespaces/([^/]+)/?", _NamespaceHandler, args),
                (r"/api/v1/nodes/?", _NodesHandler, args),
                (
                    r"/apis/authorization.k8s.io/v1/selfsubjectaccessreviews/?",
                    _SelfSubjectAccessReviewHandler,
                    args,
                ),
                (r"/api/v1/pods/?", _PodCollectionHandler, args),
                (r"/api/v1/namespaces/([^/]+)/pods/?", _PodCollectionHandler, args),
                (pod + r"/?", _PodHandler, args),
                (pod + r"/exec/?", _StreamHandler, {"api": self, "kind": "exec"}),
                (pod + r"/attach/?", _StreamHandler, {"api": self, "kind": "attach"}),
                (pod + r"/log/?", _PodLogHandler, args),
                (r"/api/v1/events/?", _EventsHandler, args),
                (r"/api/v1/namespaces/([^/]+)/events/?", _EventsHandler, args),
            ],
            default_handler_class=_NotFoundHandler,
            default_handler_args=args,
            log_function=_log_request,
            websocket_max_message_size=16 << 20,
        )


def _log_request(handler: tornado.web.RequestHandler) -> None:
    log.debug(
        "%d %s %s %.1fms",
        handler.get_status(),
        handler.request.method,
        handler.request.uri,
        1000 * handler.request.request_time(),
    )


def _qos_class(containers: Sequence[Obj]) -> str:
    requests_or_limits = [
        (c.get("resources") or {}).get(k) for c in containers for k in ("requests", "limits")
    ]
    if not any(requests_or_limits):
        return "BestEffort"
    for container in containers:
        resources = container.get("resources") or {}
        limits = resources.get("limits") or {}
        requests = resources.get("requests") or limits
        if not ("cpu" in limits and "memory" in limits) or any(
            requests.get(k) != limits.get(k) for k in ("cpu", "memory")
        ):
            return "Burstable"
    return "Guaranteed"


def _human_age(timestamp: str | None) -> str:
    """kubectl's short age (``5s``, ``3m``, ``2h``, ``4d``)."""
    if not timestamp:
        return "<unknown>"
    then = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    seconds = max(0, int((datetime.now(timezone.utc) - then).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 48 * 3600:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _pod_display_status(pod: Obj) -> str:
    """The STATUS column the API server's pod printer computes."""
    status = pod.get("status") or {}
    reason = status.get("reason") or status.get("phase") or "Unknown"
    for container_status in status.get("containerStatuses") or []:
        state = container_status.get("state") or {}
        if (state.get("waiting") or {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif "terminated" in state:
            terminated = state["terminated"]
            reason = terminated.get("reason") or f"ExitCode:{terminated.get('exitCode')}"
    if pod["metadata"].get("deletionTimestamp"):
        reason = "Terminating"
    return str(reason)


_TABLE_COLUMNS = [
    ("Name", "name", 0, "Name must be unique within a namespace."),
    ("Ready", "", 0, "The aggregate readiness state of this pod for accepting traffic."),
    ("Status", "", 0, "The aggregate status of the containers in this pod."),
    ("Restarts", "", 0, "The number of times the containers in this pod have been restarted."),
    (
        "Age",
        "",
        0,
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
    ),
    ("IP", "", 1, "IP address allocated to the pod. Routable at least within the cluster."),
    ("Node", "", 1, "NodeName is a request to schedule this pod onto a specific node."),
    (
        "Nominated Node",
        "",
        1,
        "nominatedNodeName is set when this pod preempts other pods on the node.",
    ),
    (
        "Readiness Gates",
        "",
        1,
        "If specified, all readiness gates will be evaluated for pod readiness.",
    ),
]


def pod_table(pods: Iterable[Obj], resource_version: str, include_object: str) -> Obj:
    """A ``meta.k8s.io/v1`` Table, which kubectl requests (``Accept: ...;as=Table``)."""
    rows = []
    for pod in pods:
        statuses = pod["status"].get("containerStatuses") or []
        row: Obj = {
            "cells": [
                pod["metadata"]["name"],
                f"{sum(1 for s in statuses if s.get('ready'))}/{len(pod['spec']['containers'])}",
                _pod_display_status(pod),
                str(sum(int(s.get("restartCount", 0)) for s in statuses)),
                _human_age(pod["metadata"].get("creationTimestamp")),
                pod["status"].get("podIP") or "<none>",
                pod["spec"].get("nodeName") or "<none>",
                "<none>",
                "<none>",
            ]
        }
        if include_object == "Object":
            row["object"] = pod
        elif include_object != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": pod["metadata"],
            }
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": [
            {"name": name, "type": "string", "format": fmt, "description": text, "priority": prio}
            for name, fmt, prio, text in _TABLE_COLUMNS
        ],
        "rows": rows,
    }


def _conditions(
    now: str,
    *,
    ready_to_start: bool,
    initialized: bool,
    ready: bool,
    reason: str | None = None,
    message: str | None = None,
) -> list[Obj]:
    """The five pod conditions in the kubelet's order."""

    def condition(kind: str, value: bool, with_reason: bool = False) -> Obj:
        out: Obj = {
            "type": kind,
            "status": "True" if value else "False",
            "lastProbeTime": None,
            "lastTransitionTime": now,
        }
        if with_reason and not value and reason:
            out["reason"] = reason
            if message:
                out["message"] = message
        return out

    return [
        condition("PodReadyToStartContainers", ready_to_start),
        condition("Initialized", initialized),
        condition("Ready", ready, with_reason=True),
        condition("ContainersReady", ready, with_reason=True),
        condition("PodScheduled", True),
    ]


def _container_status(
    spec: Obj,
    state: Obj,
    *,
    ready: bool,
    image_id: str | None = None,
    container_id: str | None = None,
) -> Obj:
    """A containerStatus complete enough for the clients' model deserialisation."""
    status: Obj = {
        "name": spec["name"],
        "state": state,
        "lastState": {},
        "ready": ready,
        "restartCount": 0,
        "image": normalise_image(spec.get("image") or "unknown"),
        "imageID": _image_id(spec.get("image") or "unknown") if image_id is None else image_id,
        "started": "running" in state,
    }
    if container_id:
        status["containerID"] = container_id
    return status


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (strategic merge is the same for labels/annotations)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _apply_json_patch(target: Obj, operations: list[Any]) -> Obj:
    """RFC 6902 ``add``/``replace``/``remove``/``test`` on a copy of ``target``."""
    doc = copy.deepcopy(target)
    for op in operations:
        if not isinstance(op, dict) or "path" not in op:
            raise _bad_request("the server rejected our request due to an error in our request")
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent: Any = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent.setdefault(part, {})
        last = parts[-1] if parts else ""
        kind = op.get("op")
        if kind in ("add", "replace"):
            if isinstance(parent, list):
                index = len(parent) if last == "-" else int(last)
                if kind == "add":
                    parent.insert(index, op.get("value"))
                else:
                    parent[index] = op.get("value")
            else:
                parent[last] = op.get("value")
        elif kind == "remove":
            if isinstance(parent, list):
                del parent[int(last)]
            elif last in parent:
                del parent[last]
            else:
                raise ApiError(
                    422,
                    "Invalid",
                    f'the server rejected our request: jsonpatch remove operation does not apply: doc is missing path: "{op["path"]}"',
                )
        elif kind == "test":
            current = parent[int(last)] if isinstance(parent, list) else parent.get(last)
            if current != op.get("value"):
                raise ApiError(
                    422,
                    "Invalid",
                    f"the server rejected our request: testing value {op['path']} failed",
                )
        else:
            raise _bad_request(f"Unexpected kind: {kind}")
    return doc


# --------------------------------------------------------------------------- handlers


class _BaseHandler(tornado.web.RequestHandler):
    """Records the request, checks the bearer token and answers errors as Status JSON."""

    api: FakeKubeAPI

    def initialize(self, api: FakeKubeAPI) -> None:
        self.api = api

    def prepare(self) -> None:
        request = self.request
        query = {
            k: [v.decode("utf-8", "replace") for v in values]
            for k, values in request.query_arguments.items()
        }
        headers: dict[str, str] = {}
        for name, value in request.headers.get_all():
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self.api.requests.append(
            RecordedRequest(request.method or "", request.path, query, headers)
        )
        self.api._changed()
        auth = request.headers.get("Authorization")
        # kubectl sends no Authorization over plain http for exec: missing is accepted.
        if auth is not None and auth != f"Bearer {self.api.token}":
            raise ApiError(401, "Unauthorized", "Unauthorized")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            body = exc.body
            for name, value in exc.headers.items():
                self.set_header(name, value)
        elif status_code == 405:
            body = status_body(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        elif isinstance(exc, tornado.web.HTTPError):
            body = status_body(status_code, self._reason, exc.log_message or self._reason)
        else:
            body = status_body(
                500,
                "InternalError",
                f"Internal error occurred: {exc}",
                {"causes": [{"message": str(exc)}]},
            )
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, ApiError):
            log.debug("%s %s -> %s", self.request.method, self.request.uri, value)
        else:
            super().log_exception(typ, value, tb)

    def arg(self, name: str, default: str | None = None) -> str | None:
        return self.get_query_argument(name, default)

    def wants_table(self) -> bool:
        return "as=Table" in (self.request.headers.get("Accept") or "")

    def send_json(self, code: int, body: Any) -> None:
        self.set_status(code)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    async def admit(
        self, verb: str, resource: str, namespace: str | None, name: str | None
    ) -> None:
        """Injected delay, RBAC denial and transient failure, in that order."""
        faults = self.api.faults
        delay = faults.take_delay(verb, resource)
        if delay:
            await asyncio.sleep(delay)
        if (verb, resource) in faults.forbidden:
            raise faults.forbidden_error(verb, resource, namespace, name)
        failure = faults.take_failure(verb, resource)
        if failure is not None:
            raise failure_error(failure)

    def json_body(self) -> Any:
        try:
            return json.loads(self.request.body or b"null")
        except ValueError as exc:
            raise _bad_request(f"couldn't get version/kind; json parse error: {exc}") from exc


class _NotFoundHandler(_BaseHandler):
    def prepare(self) -> None:
        super().prepare()
        raise ApiError(404, "NotFound", "the server could not find the requested resource", {})


class _VersionHandler(_BaseHandler):
    def get(self) -> None:
        major, minor, _ = self.api.kubernetes_version.split(".", 2)
        self.send_json(
            200,
            {
                "major": major,
                "minor": minor,
                "emulationMajor": major,
                "emulationMinor": minor,
                "minCompatibilityMajor": major,
                "minCompatibilityMinor": str(int(minor) - 1),
                "gitVersion": f"v{self.api.kubernetes_version}",
                "gitCommit": "0" * 40,
                "gitTreeState": "clean",
                "buildDate": "2025-08-27T00:00:00Z",
                "goVersion": "go1.24.6",
                "compiler": "gc",
                "platform": "linux/amd64",
            },
        )


class _ApiVersionsHandler(_BaseHandler):
    def get(self) -> None:
        self.send_json(
            200,
            {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.api.port}"}
                ],
            },
        )


class _ApiGroupsHandler(_BaseHandler):
    def get(self) -> None:
        self.send_json(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": []})


_POD_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


class _ResourceListHandler(_BaseHandler):
    def get(self) -> None:
        def resource(
            name: str, kind: str, verbs: list[str], namespaced: bool = True, **extra: Any
        ) -> Obj:
            return {
                "name": name,
                "singularName": extra.pop("singularName", ""),
                "namespaced": namespaced,
                "kind": kind,
                "verbs": verbs,
                **extra,
            }

        self.send_json(
            200,
            {
                "kind": "APIResourceList",
                "groupVersion": "v1",
                "resources": [
                    resource(
                        "events", "Event", _POD_VERBS, singularName="event", shortNames=["ev"]
                    ),
                    resource(
                        "namespaces",
                        "Namespace",
                        ["create", "delete", "get", "list", "patch", "update", "watch"],
                        namespaced=False,
                        singularName="namespace",
                        shortNames=["ns"],
                    ),
                    resource(
                        "pods",
                        "Pod",
                        _POD_VERBS,
                        singularName="pod",
                        shortNames=["po"],
                        categories=["all"],
                    ),
                    resource("pods/attach", "PodAttachOptions", ["create", "get"]),
                    resource("pods/exec", "PodExecOptions", ["create", "get"]),
                    resource("pods/log", "Pod", ["get"]),
                    resource("pods/status", "Pod", ["get", "patch", "update"]),
                ],
            },
        )


class _NamespacesHandler(_BaseHandler):
    def get(self) -> None:
        self.send_json(
            200,
            {
                "kind": "NamespaceList",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": str(self.api._rv)},
                "items": list(self.api.namespaces.values()),
            },
        )


class _NamespaceHandler(_BaseHandler):
    async def get(self, namespace: str) -> None:
        await self.admit("get", "namespaces", None, namespace)
        obj = self.api.namespaces.get(namespace)
        if obj is None:
            raise _not_found(namespace, "namespaces")
        self.send_json(200, obj)


class _NodesHandler(_BaseHandler):
    """One Ready node whose ``status.images`` lists ``FakeKubeAPI.node_images``."""

    async def get(self) -> None:
        await self.admit("list", "nodes", None, None)
        api = self.api
        version = f"v{api.kubernetes_version}"
        node: Obj = {
            "kind": "Node",
            "apiVersion": "v1",
            "metadata": {
                "name": NODE_NAME,
                "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, NODE_NAME)),
                "resourceVersion": "1",
                "creationTimestamp": _now(-3600),
                "labels": {
                    "kubernetes.io/hostname": NODE_NAME,
                    "kubernetes.io/os": "linux",
                    "node-role.kubernetes.io/control-plane": "true",
                },
            },
            "spec": {"podCIDR": "10.42.0.0/24"},
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": HOST_IP},
                    {"type": "Hostname", "address": NODE_NAME},
                ],
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "kubelet is posting ready status",
                    }
                ],
                "images": [
                    {"names": list(names), "sizeBytes": 100_000_000 + i}
                    for i, names in enumerate(api.node_images)
                ],
                "nodeInfo": {
                    "kubeletVersion": version,
                    "containerRuntimeVersion": "containerd://2.0.0",
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                },
            },
        }
        self.send_json(
            200,
            {
                "kind": "NodeList",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": str(api._rv)},
                "items": [node],
            },
        )


class _SelfSubjectAccessReviewHandler(_BaseHandler):
    """``kubectl auth can-i``: allowed unless ``Faults.forbid`` denies the verb/resource.

    Every authenticated user may create these reviews (``system:basic-user``), so the
    request itself is never denied. ``resource`` + ``/`` + ``subresource`` is the key
    ``forbid`` uses, so one switch denies both the real request and the review.
    """

    async def post(self) -> None:
        body = self.json_body()
        if not isinstance(body, dict) or body.get("kind") not in (None, "SelfSubjectAccessReview"):
            raise _bad_request("expected a SelfSubjectAccessReview")
        spec = body.get("spec") or {}
        attributes = spec.get("resourceAttributes")
        non_resource = spec.get("nonResourceAttributes")
        if (attributes is None) == (non_resource is None):
            raise ApiError(
                422,
                "Invalid",
                "SelfSubjectAccessReview.authorization.k8s.io is invalid: spec.resourceAttributes: "
                "Invalid value: exactly one of nonResourceAttributes or resourceAttributes "
                "must be specified",
                {"group": "authorization.k8s.io", "kind": "SelfSubjectAccessReview"},
            )
        if attributes is not None:
            resource = str(attributes.get("resource") or "")
            if attributes.get("subresource"):
                resource += f"/{attributes['subresource']}"
            key = (str(attributes.get("verb") or ""), resource)
        else:
            key = (str(non_resource.get("verb") or ""), str(non_resource.get("path") or ""))
        allowed = key not in self.api.faults.forbidden
        status: Obj = {"allowed": allowed}
        if allowed:
            status["reason"] = "fake API server: allowed"
        self.send_json(
            201,
            {
                "kind": "SelfSubjectAccessReview",
                "apiVersion": "authorization.k8s.io/v1",
                "metadata": {"creationTimestamp": None},
                "spec": spec,
                "status": status,
            },
        )


class _PodCollectionHandler(_BaseHandler):
    _watcher: _Watcher | None = None

    def _matcher(self) -> Callable[[Obj], bool]:
        labels = parse_label_selector(self.arg("labelSelector") or "")
        fields = parse_field_selector(self.arg("fieldSelector") or "", POD_FIELDS)
        return lambda pod: labels(pod["metadata"].get("labels") or {}) and fields(pod)

    async def get(self, namespace: str | None = None) -> None:
        watch = _flag(self.arg("watch"))
        await self.admit("watch" if watch else "list", "pods", namespace, None)
        matcher = self._matcher()
        if watch:
            await self._watch(namespace, matcher)
            return
        listed = self.api._list_pods(namespace, matcher)
        if self.wants_table():
            rv = listed["metadata"]["resourceVersion"]
            listed = pod_table(listed["items"], rv, self.arg("includeObject") or "Metadata")
        self.send_json(200, listed)

    async def post(self, namespace: str | None = None) -> None:
        if namespace is None:
            raise tornado.web.HTTPError(405)
        body = self.json_body()
        if not isinstance(body, dict):
            raise _bad_request("Object 'Kind' is missing in request body")
        self.api.created_bodies.append(copy.deepcopy(body))
        self.api._changed()
        await self.admit("create", "pods", namespace, None)
        dry_run = "All" in self.get_query_arguments("dryRun")
        strict = (self.arg("fieldValidation") or "Strict") != "Ignore"
        self.send_json(201, self.api._create_pod(namespace, body, dry_run=dry_run, strict=strict))

    async def delete(self, namespace: str | None = None) -> None:
        if namespace is None:
            raise tornado.web.HTTPError(405)
        await self.admit("deletecollection", "pods", namespace, None)
        matcher = self._matcher()
        grace = _grace(self)
        dry_run = "All" in self.get_query_arguments("dryRun")
        items = [
            self.api._delete_pod(namespace, pod["metadata"]["name"], grace, dry_run)
            for pod in list(self.api.pods.values())
            if pod["metadata"]["namespace"] == namespace and matcher(pod)
        ]
        self.send_json(
            200,
            {
                "kind": "PodList",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": str(self.api._rv)},
                "items": items,
            },
        )

    async def _watch(self, namespace: str | None, matcher: Callable[[Obj], bool]) -> None:
        """Chunked JSON lines; replay from ``resourceVersion`` or 410 if it is too old.

        ``sendInitialEvents=true`` (a "watch list", used by kubectl 1.37 ``delete --wait``)
        gets ADDED events for the current state and then the BOOKMARK annotated
        ``k8s.io/initial-events-end`` that such clients wait for.
        """
        api = self.api
        since = self.arg("resourceVersion") or ""
        timeout_arg = self.arg("timeoutSeconds")
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-cache, private")
        if _flag(self.arg("sendInitialEvents")):
            backlog = [
                (json.dumps({"type": "ADDED", "object": pod}) + "\n").encode()
                for pod in api.pods.values()
                if (namespace is None or pod["metadata"]["namespace"] == namespace) and matcher(pod)
            ]
            bookmark = {
                "kind": "Pod",
                "apiVersion": "v1",
                "metadata": {
                    "resourceVersion": str(api._rv),
                    "annotations": {"k8s.io/initial-events-end": "true"},
                },
            }
            backlog.append((json.dumps({"type": "BOOKMARK", "object": bookmark}) + "\n").encode())
        elif since not in ("", "0"):
            try:
                since_rv = int(since)
            except ValueError as exc:
                raise ApiError(
                    400,
                    "BadRequest",
                    f'resourceVersion: Invalid value: "{since}": must be an integer',
                ) from exc
            if since_rv < api._floor:
                self.write(api._expired_line(since_rv))
                self.finish()
                return
            backlog = [
                e.line for e in api._history if e.rv > since_rv and _accepts(namespace, matcher, e)
            ]
        else:  # no or "0" resourceVersion: synthetic ADDED for the current state first
            backlog = [
                (json.dumps({"type": "ADDED", "object": pod}) + "\n").encode()
                for pod in api.pods.values()
                if (namespace is None or pod["metadata"]["namespace"] == namespace) and matcher(pod)
            ]
        watcher = _Watcher(namespace, matcher)
        self._watcher = watcher
        api._watchers.add(watcher)
        api._changed()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(timeout_arg) if timeout_arg else None
        try:
            for line in backlog:
                self.write(line)
            await self.flush()
            while True:
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(watcher.queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
                if item == "abort":
                    stream = getattr(self.request.connection, "stream", None)
                    if stream is not None:
                        stream.close()
                    return
                if item == "expire":
                    self.write(api._expired_line(since or 0))
                    break
                assert isinstance(item, _WatchEvent)
                self.write(item.line)
                await self.flush()
            self.finish()
        except StreamClosedError:
            pass
        finally:
            api._watchers.discard(watcher)
            api._changed()

    def on_connection_close(self) -> None:
        if self._watcher is not None:
            self._watcher.queue.put_nowait("abort")


def _accepts(namespace: str | None, matcher: Callable[[Obj], bool], event: _WatchEvent) -> bool:
    return (namespace is None or event.namespace == namespace) and matcher(event.obj)


def _grace(handler: _BaseHandler) -> int | None:
    """gracePeriodSeconds from the query (Python clients) or a DeleteOptions body (kubectl)."""
    value = handler.arg("gracePeriodSeconds")
    if value is None and handler.request.body:
        body = handler.json_body()
        if isinstance(body, dict) and body.get("gracePeriodSeconds") is not None:
            value = str(body["gracePeriodSeconds"])
    return int(value) if value is not None else None


class _PodHandler(_BaseHandler):
    async def get(self, namespace: str, name: str) -> None:
        await self.admit("get", "pods", namespace, name)
        pod = self.api._get_pod(namespace, name)
        if self.wants_table():
            include = self.arg("includeObject") or "Metadata"
            pod = pod_table([pod], pod["metadata"]["resourceVersion"], include)
        self.send_json(200, pod)

    async def delete(self, namespace: str, name: str) -> None:
        await self.admit("delete", "pods", namespace, name)
        dry_run = "All" in self.get_query_arguments("dryRun")
        if not dry_run and self.request.body:
            body = self.json_body()
            dry_run = isinstance(body, dict) and "All" in (body.get("dryRun") or [])
        self.send_json(200, self.api._delete_pod(namespace, name, _grace(self), dry_run))

    async def patch(self, namespace: str, name: str) -> None:
        await self.admit("patch", "pods", namespace, name)
        content_type = (self.request.headers.get("Content-Type") or "").split(";")[0].strip()
        accepted = (
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
        )
        if content_type not in accepted:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types "
                f"include: {', '.join(accepted)}",
            )
        self.send_json(200, self.api._patch_pod(namespace, name, content_type, self.json_body()))


class _PodLogHandler(_BaseHandler):
    async def get(self, namespace: str, name: str) -> None:
        await self.admit("get", "pods/log", namespace, name)
        pod = self.api._get_pod(namespace, name)
        runtime = self.api._runtimes[self.api._key(namespace, name)]
        cname = self.arg("container") or pod["spec"]["containers"][0]["name"]
        container = runtime.containers.get(cname)
        if container is None:
            raise _bad_request(f"container {cname} is not valid for pod {name}")
        for status in pod["status"].get("containerStatuses") or []:
            waiting = (status.get("state") or {}).get("waiting")
            if status["name"] == cname and waiting:
                raise _bad_request(
                    f'container "{cname}" in pod "{name}" is waiting to start: {waiting.get("reason")}'
                )
        if not pod["spec"].get("nodeName") or not pod["status"].get("containerStatuses"):
            raise _bad_request(
                f'container "{cname}" in pod "{name}" is waiting to start: ContainerCreating'
            )
        self.set_header("Content-Type", "text/plain")
        self.finish(bytes(container.log))


class _EventsHandler(_BaseHandler):
    async def get(self, namespace: str | None = None) -> None:
        await self.admit("list", "events", namespace, None)
        fields = parse_field_selector(self.arg("fieldSelector") or "", EVENT_FIELDS)
        items = [
            e
            for e in self.api.events
            if (namespace is None or e["metadata"]["namespace"] == namespace) and fields(e)
        ]
        self.send_json(
            200,
            {
                "kind": "EventList",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": str(self.api._rv)},
                "items": items,
            },
        )


class _StreamHandler(tornado.websocket.WebSocketHandler, _BaseHandler):
    """``pods/{name}/exec`` and ``pods/{name}/attach`` over the k8s channel protocols.

    Every frame's first byte is the channel: 0 stdin (text or binary frames accepted),
    1 stdout, 2 stderr, 3 status, 4 resize; with v5 ``\\xff<channel>`` closes a stream.
    Output is sent in binary frames as soon as it is read.
    """

    def initialize(self, api: FakeKubeAPI, kind: str = "exec") -> None:
        self.api = api
        self.ws_kind = kind
        self.ws_protocol = ""
        self.ws_argv: list[str] = []
        self.ws_tty = self.ws_stdin = self.ws_stdout = self.ws_stderr = False
        self.ws_proc: LocalProcess | None = None
        self.ws_container: _Container | None = None
        self.ws_runtime: _PodRuntime | None = None
        self.ws_pending: list[bytes] = []
        self.ws_done = False

    def check_origin(self, origin: str) -> bool:
        return True

    async def post(self, namespace: str, name: str) -> None:
        """SPDY (kubectl's fallback) is not spoken: answer as for a missing upgrade."""
        raise _bad_request("Upgrade request required")

    async def get(self, namespace: str, name: str) -> None:
        api = self.api
        await self.admit("create", f"pods/{self.ws_kind}", namespace, name)
        pod = api._get_pod(namespace, name)
        containers = [c["name"] for c in pod["spec"]["containers"]]
        cname = self.arg("container") or containers[0]
        if cname not in containers:
            raise _bad_request(f"container {cname} is not valid for pod {name}")
        self.ws_argv = self.get_query_arguments("command")
        if self.ws_kind == "exec" and not self.ws_argv:
            raise _bad_request("you must specify at least 1 command")
        self.ws_stdin = _flag(self.arg("stdin"))
        self.ws_stdout = _flag(self.arg("stdout"))
        self.ws_stderr = _flag(self.arg("stderr"))
        self.ws_tty = _flag(self.arg("tty"))
        if not (self.ws_stdin or self.ws_stdout or self.ws_stderr):
            raise _bad_request("you must specify at least one of stdin, stdout, stderr")
        running = any(
            s["name"] == cname and "running" in (s.get("state") or {})
            for s in pod["status"].get("containerStatuses") or []
        )
        if pod["status"].get("phase") != "Running" or not running:
            raise _bad_request(f'container not running ("{cname}")')
        header = self.request.headers.get("Sec-WebSocket-Protocol") or ""
        offered = [p.strip() for p in header.split(",") if p.strip()]
        chosen = next((p for p in api.protocols if p in offered), None)
        if chosen is None:
            raise _bad_request(
                f"unable to upgrade connection: requested protocol(s) are not supported: "
                f"{offered}; supports {list(api.protocols)}"
            )
        self.ws_protocol = chosen
        self.ws_runtime = api._runtimes[api._key(namespace, name)]
        self.ws_container = self.ws_runtime.containers[cname]
        await super().get(namespace, name)

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        return self.ws_protocol or None

    def open(self, namespace: str, name: str) -> None:
        api = self.api
        api._websockets.add(self)
        api._changed()
        runtime, container = self.ws_runtime, self.ws_container
        assert runtime is not None
        assert container is not None
        pod = api.pods.get(api._key(namespace, name))
        if pod is None or runtime is not api._runtimes.get(runtime.key):
            self.close(1000)
            return
        if self.ws_kind == "attach":
            if container.killed:
                self.finish_with_status(exit_status(0, []))
            else:
                container.attached.add(self)
            return
        try:
            self.ws_proc = api._spawn(
                runtime,
                self.ws_argv,
                env=api._container_env(pod, runtime, container.spec, self.ws_tty),
                cwd=api._cwd(runtime, container.spec),
                tty=self.ws_tty,
                stdin=self.ws_stdin,
                on_output=self._forward,
                on_exit=lambda code: self.finish_with_status(exit_status(code, self.ws_argv)),
            )
        except OSError as exc:
            message = (
                "error executing command in container: failed to exec in container: failed to "
                "start exec: OCI runtime exec failed: exec failed: unable to start container "
                f'process: exec: "{self.ws_argv[0]}": {exc.strerror}: unknown'
            )
            self.finish_with_status(
                {
                    "metadata": {},
                    "status": "Failure",
                    "message": f"Internal error occurred: {message}",
                    "reason": "InternalError",
                    "details": {"causes": [{"message": message}]},
                    "code": 500,
                }
            )
            return
        runtime.execs.add(self.ws_proc)
        for data in self.ws_pending:
            self.ws_proc.write(data)
        self.ws_pending.clear()

    def _forward(self, channel: int, data: bytes) -> None:
        if (channel == STDOUT and self.ws_stdout) or (channel == STDERR and self.ws_stderr):
            self.send_channel(channel, data)

    def _stdin_target(self) -> LocalProcess | None:
        if self.ws_kind == "attach":
            container = self.ws_container
            if container is None or not container.spec.get("stdin"):
                return None
            return container.main
        return self.ws_proc

    def on_message(self, message: str | bytes) -> None:
        data = message.encode("utf-8") if isinstance(message, str) else message
        if not data:
            return
        channel, payload = data[0], data[1:]
        if channel == STDIN and self.ws_stdin:
            target = self._stdin_target()
            if target is not None:
                target.write(payload)
            elif self.ws_kind == "exec" and self.ws_proc is None:
                self.ws_pending.append(payload)
        elif channel == RESIZE:
            target = (
                self.ws_proc
                if self.ws_kind == "exec"
                else (self.ws_container.main if self.ws_container else None)
            )
            try:
                size = json.loads(payload)
                cols, rows = int(size["Width"]), int(size["Height"])
            except (ValueError, KeyError, TypeError):
                log.debug("ignoring bad resize frame %r", payload)
                return
            if target is not None:
                target.resize(cols, rows)
        elif channel == CLOSE and self.ws_protocol == V5_PROTOCOL and payload[:1] == bytes([STDIN]):
            target = self._stdin_target()
            if target is None:
                return
            if self.ws_kind == "exec" or (
                self.ws_container and self.ws_container.spec.get("stdinOnce")
            ):
                target.close_stdin()

    def send_channel(self, channel: int, data: bytes) -> None:
        if self.ws_done or self.ws_connection is None:
            return
        try:
            future = self.write_message(bytes([channel]) + data, binary=True)
        except tornado.websocket.WebSocketClosedError:
            return
        future.add_done_callback(lambda f: f.cancelled() or f.exception())

    def finish_with_status(self, status: Obj) -> None:
        """Status on channel 3, then close 1000, as the kubelet ends a stream."""
        if self.ws_done:
            return
        self.send_channel(ERROR, json.dumps(status, separators=(",", ":")).encode())
        self.ws_done = True
        if self.ws_connection is not None:
            self.close(1000)

    def abort(self) -> None:
        """Drop the TCP connection without a close frame (API server gone)."""
        self.ws_done = True
        connection = self.ws_connection
        if connection is not None and connection.stream is not None:
            connection.stream.close()
        else:
            self.on_connection_close()

    def on_close(self) -> None:
        self.ws_done = True
        self.api._websockets.discard(self)
        self.api._changed()
        if self.ws_container is not None:
            self.ws_container.attached.discard(self)
        if self.ws_proc is not None and self.ws_proc.alive:
            self.ws_proc.hangup()


def _expand_env_value(value: str, declared: Mapping[str, str]) -> str:
    """Kubernetes' expansion of a container ``env`` value, as the kubelet does it.

    ``$(NAME)`` becomes the value of an earlier-declared variable (unknown names stay as
    written) and ``$$`` becomes a literal ``$``, so ``$$(NAME)`` escapes a reference.
    """
    out: list[str] = []
    i = 0
    while i < len(value):
        if value[i] == "$" and i + 1 < len(value):
            nxt = value[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = value.find(")", i + 2)
                if end != -1:
                    name = value[i + 2 : end]
                    out.append(declared.get(name, value[i : end + 1]))
                    i = end + 1
                    continue
        out.append(value[i])
        i += 1
    return "".join(out)
