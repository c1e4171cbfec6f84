"""What one sandbox needs, as plain immutable data.

Kept free of traitlets and I/O so that the pod builder stays a pure function of
(spec, options) and a later remote backend (a hub broker) can serialise it as is.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

#: Where a session's course material appears inside every sandbox (read-only).
COURSE_DIR = "/course"

#: Environment variable names that must never be copied into a sandbox: the
#: real Anthropic key lives only in the key proxy.
FORBIDDEN_ENV_NAMES = frozenset({"ANTHROPIC_API_KEY"})

_SLUG_OK = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
#: Course ids (the courses package's ``COURSE_ID_RE``, repeated so that this module
#: stays free of imports): they reach labels, paths and argv only after this check.
_COURSE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
#: One path segment of a course subpath or a hidden name: no separators, no NUL.
_SEGMENT_BAD = re.compile(r"[/\x00]")


def safe_slug(value: str, max_length: int = 40) -> str:
    """A DNS-label- and label-value-safe slug of ``value``.

    As KubeSpawner's ``safe`` scheme: a value that is already safe and has no ``--``
    is kept as is; anything else becomes the cleaned value, ``---`` and a hash. A kept
    value never contains ``--``, so it can never equal an escaped one, and two
    different usernames never share a slug (the seed system truncated ids and
    collided).
    """
    if _SLUG_OK.fullmatch(value) and "--" not in value and len(value) <= max_length:
        return value
    cleaned = re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-") or "x"
    digest = hashlib.sha256(value.encode("utf-8")).hexdigest()[:8]
    return f"{cleaned[: max_length - 11].strip('-') or 'x'}---{digest}"


@dataclass(frozen=True)
class CourseMount:
    """The course material one session sees read-only at :data:`COURSE_DIR`.

    Only the material: a course's manifest holds the quiz answers and must never be
    visible in a sandbox, so backends mount ``subpath`` (Kubernetes: of the courses
    volume) or ``host_path`` (local), never the course or courses directory itself.
    """

    #: The course id (already validated: ``[A-Za-z0-9][A-Za-z0-9_-]{0,63}``).
    id: str
    #: The material directory relative to the courses directory (``intro/material``).
    subpath: str
    #: The material directory on the Jupyter server's host (absolute).
    host_path: str
    #: Names of files directly in the material directory that the sandbox must not
    #: see (a manifest, a seed CLAUDE.md with its answers, when the material is the
    #: course directory itself); backends cover each with an empty file.
    hidden: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Refuse what could escape the course: ``..``, absolute paths, odd ids.

        Why here: the spec crosses into argv (bubblewrap) and pod specs (subPath), so
        a bad value must be impossible to construct rather than checked by each backend.
        """
        if not _COURSE_ID.fullmatch(self.id):
            raise ValueError(f"invalid course id {self.id!r}")
        parts = self.subpath.split("/")
        if not self.subpath or any(p in ("", ".", "..") or "\0" in p for p in parts):
            raise ValueError(f"course subpath {self.subpath!r} must be a plain relative path")
        if not self.host_path.startswith("/") or "\0" in self.host_path:
            raise ValueError(f"course host path {self.host_path!r} must be absolute")
        for name in self.hidden:
            if name in ("", ".", "..") or _SEGMENT_BAD.search(name):
                raise ValueError(f"hidden course file {name!r} must be a plain file name")


@dataclass(frozen=True)
class SandboxSpec:
    """One sandbox session: who it is for and what it runs."""

    #: Unique, DNS-safe id of this session (also names the pod).
    session_id: str
    #: The authenticated Jupyter username (raw, as the identity provider gives it).
    user: str
    #: The Jupyter terminal name (matches ``\\w+``).
    terminal: str
    #: argv of the sandbox program; ``None`` = the backend's configured default.
    command: tuple[str, ...] | None = None
    #: Per-session environment (e.g. the proxy session token).
    env: Mapping[str, str] = field(default_factory=dict)
    #: Initial terminal size.
    rows: int = 24
    cols: int = 80
    #: The course material to mount, if this session is a course's.
    course: CourseMount | None = None

    @property
    def user_slug(self) -> str:
        """The username as a label-safe slug."""
        return safe_slug(self.user)


def scrub_env(env: Mapping[str, str], secrets: tuple[str, ...] = ()) -> dict[str, str]:
    """Drop forbidden variable names and any value equal to a known secret.

    Why: an operator's ``extra_env`` or a course definition could otherwise copy the
    real key into a pod by name or by value.
    """
    banned = {s for s in secrets if s}
    return {k: v for k, v in env.items() if k not in FORBIDDEN_ENV_NAMES and v not in banned}
