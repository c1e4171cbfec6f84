"""The backend interface every sandbox implementation provides.

A backend turns a :class:`SandboxSpec` into a running sandbox and an interactive
byte stream to its program. Today: ``kubernetes``; next: ``local`` (bubblewrap)
and ``remote`` (a hub broker holding the cluster rights).
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from traitlets import Dict, List, Unicode
from traitlets.config import LoggingConfigurable

from .spec import SandboxSpec

#: Receives one human-readable progress line ("scheduled on node n1…").
ProgressCallback = Callable[[str], None]


class SandboxError(Exception):
    """A failure to show to the person in their terminal.

    ``message`` must be safe to display: no secrets, no stack traces.
    """

    def __init__(self, message: str, *, reason: str = "Error") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


class CapacityError(SandboxError):
    """A per-user or global sandbox cap was reached."""


@dataclass
class Sandbox:
    """A started sandbox, as the terminal layer sees it."""

    spec: SandboxSpec
    #: Backend-specific name (pod name, process id…), for logs and messages.
    name: str
    #: Resolved with a human-readable reason when the sandbox ends on its own
    #: (killed, OOM, deadline) while a session is attached.
    ended: asyncio.Future[str] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    #: Backend-private details.
    extra: dict[str, Any] = field(default_factory=dict)


class SandboxStream(abc.ABC):
    """A bidirectional TTY byte stream to the sandbox program."""

    #: Exit status of the program once known (``None`` while running or unknown).
    exit_status: int | None = None

    @abc.abstractmethod
    async def read(self) -> bytes:
        """Next chunk of output; ``b""`` at end of stream."""

    @abc.abstractmethod
    async def write(self, data: bytes) -> None:
        """Send keystrokes to the program."""

    @abc.abstractmethod
    async def resize(self, rows: int, cols: int) -> None:
        """Set the TTY size."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the stream (idempotent)."""


class SandboxBackend(LoggingConfigurable):
    """Start, connect to, stop and reconcile sandboxes."""

    #: Name used in configuration (``backend = "kubernetes"``).
    kind = "abstract"

    command = List(
        Unicode(),
        default_value=["/usr/local/bin/claude-pods-launch"],
        config=True,
        help="""argv of the program each terminal runs in its sandbox.

        The default is the Claude Code launcher of the sandbox image; a shell such as
        ``["bash", "-l"]`` is handy for debugging an installation.""",
    )

    extra_env = Dict(
        value_trait=Unicode(),
        default_value={},
        config=True,
        help="""Extra environment variables for every sandbox.

        ``ANTHROPIC_API_KEY`` and any value equal to the server's own key are dropped:
        the real key must only ever live in the key proxy.""",
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._started: asyncio.Future[None] | None = None

    async def startup(self) -> None:
        """Run :meth:`_startup` once, however many callers ask concurrently.

        Sandbox starts and sweeps call this too, so a backend is ready before use
        without its callers coordinating.
        """
        if self._started is None:
            self._started = asyncio.get_running_loop().create_future()
            try:
                await self._startup()
            finally:
                self._started.set_result(None)
        else:
            await asyncio.shield(self._started)

    async def shutdown(self) -> None:
        """Run :meth:`_shutdown`; a later :meth:`startup` starts afresh."""
        await self._shutdown()
        self._started = None

    async def _startup(self) -> None:
        """Open clients and watches; reconcile leftovers of a previous run."""

    async def _shutdown(self) -> None:
        """Close clients and watches (sandboxes are stopped by the manager first)."""

    @abc.abstractmethod
    async def start(self, spec: SandboxSpec, progress: ProgressCallback) -> Sandbox:
        """Create the sandbox and wait until its program can be connected to.

        Raises :class:`SandboxError` with a displayable message; cleans up after itself
        on failure.
        """

    @abc.abstractmethod
    async def connect(self, sandbox: Sandbox) -> SandboxStream:
        """Open the interactive stream to the sandbox program."""

    @abc.abstractmethod
    async def stop(self, sandbox: Sandbox) -> None:
        """Delete the sandbox; idempotent, never raises for "already gone"."""

    @abc.abstractmethod
    async def sweep(self) -> int:
        """Delete sandboxes this server left behind (e.g. after a crash); return how many."""
