"""A stand-in backend used when no sandbox backend can run here.

It keeps the server and JupyterLab working and makes every terminal explain, in the
terminal itself, what is missing.
"""

from __future__ import annotations

from .base import ProgressCallback, Sandbox, SandboxBackend, SandboxError, SandboxStream
from .spec import SandboxSpec


class UnavailableBackend(SandboxBackend):
    """Fails every start with a message saying how to configure a backend."""

    kind = "unavailable"

    #: Set by the manager to the reason (e.g. bubblewrap is not installed).
    message = "no sandbox backend is available"

    async def start(self, spec: SandboxSpec, progress: ProgressCallback) -> Sandbox:
        raise SandboxError(self.message, reason="NoBackend")

    async def connect(self, sandbox: Sandbox) -> SandboxStream:
        raise SandboxError(self.message, reason="NoBackend")

    async def stop(self, sandbox: Sandbox) -> None:
        return None

    async def sweep(self) -> int:
        return 0
