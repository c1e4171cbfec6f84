"""What one sandbox needs, as plain immutable data.

Kept free of traitlets and I/O so that the pod builder stays a pure function of
(spec, options) and a later remote backend (a hub broker) can serialise it as is.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

#: Environment variable names that must never be copied into a sandbox: the
#: real Anthropic key lives only in the key proxy.
FORBIDDEN_ENV_NAMES = frozenset({"ANTHROPIC_API_KEY"})

_SLUG_OK = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


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
