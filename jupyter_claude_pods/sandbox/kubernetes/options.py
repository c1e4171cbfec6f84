"""Everything the pod builder needs besides the session spec, as plain data.

The backend fills this from its traitlets once; :func:`objects.make_pod` turns
``(SandboxSpec, PodOptions)`` into a pod manifest without any I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MANAGED_BY = "jupyter-claude-pods"
LABEL_PREFIX = "claude-pods.jupyter.org"
USER_LABEL = f"{LABEL_PREFIX}/user"
TERMINAL_LABEL = f"{LABEL_PREFIX}/terminal"
SESSION_LABEL = f"{LABEL_PREFIX}/session"
COURSE_LABEL = f"{LABEL_PREFIX}/course"
USERNAME_ANNOTATION = f"{LABEL_PREFIX}/username"
TERMINAL_NAME_ANNOTATION = f"{LABEL_PREFIX}/terminal-name"
#: Always empty: the content of the file laid over hidden course files.
EMPTY_ANNOTATION = f"{LABEL_PREFIX}/empty"
INSTANCE_LABEL = "app.kubernetes.io/instance"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"


@dataclass(frozen=True)
class PodOptions:
    """Operator configuration of sandbox pods (see the backend's traits for help)."""

    namespace: str
    image: str
    #: Which server instance owns the pod; the orphan sweep selects on it.
    instance: str
    image_pull_policy: str = "IfNotPresent"
    container_name: str = "sandbox"
    #: The container's main process. In ``exec`` mode an idle process the session is
    #: exec'd next to; in ``attach`` mode the sandbox program itself.
    container_command: tuple[str, ...] = ("sleep", "infinity")
    #: ``attach`` mode: give the main process a TTY and stdin.
    tty: bool = False
    working_dir: str | None = None
    home_dir: str = "/home/claude"
    #: Static environment from the operator (already scrubbed of secrets).
    env: dict[str, str] = field(default_factory=dict)
    #: The key proxy's URL, given to the sandbox as ``ANTHROPIC_BASE_URL``.
    proxy_url: str | None = None
    cpu_request: str | None = "250m"
    cpu_limit: str | None = "2"
    memory_request: str | None = "512Mi"
    memory_limit: str | None = "2Gi"
    ephemeral_storage_request: str | None = "256Mi"
    ephemeral_storage_limit: str | None = "2Gi"
    #: Extended resources as limits (e.g. ``nvidia.com/gpu``); requests follow them.
    extra_limits: dict[str, str] = field(default_factory=dict)
    home_size_limit: str = "1Gi"
    tmp_size_limit: str = "512Mi"
    active_deadline_seconds: int | None = 8 * 3600
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()
    runtime_class_name: str | None = None
    extra_labels: dict[str, str] = field(default_factory=dict)
    extra_annotations: dict[str, str] = field(default_factory=dict)
    run_as_user: int = 1000
    run_as_group: int = 1000
    fs_group: int = 1000
    #: ``{"apiVersion", "kind", "name", "uid"}`` of the Jupyter server's own pod, set
    #: only when it runs in the same namespace (cross-namespace owners are invalid and
    #: would make the garbage collector delete the sandbox at once).
    owner_reference: dict[str, str] | None = None
    #: A volume source (``{"persistentVolumeClaim": {...}}``) holding the courses
    #: directory; a course session mounts its material from it. ``None``: no courses.
    courses_volume: dict[str, Any] | None = None
