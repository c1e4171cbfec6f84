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

    message = (
        "no sandbox backend is available: no Kubernetes cluster is configured (set KUBECONFIG, "
        "or run the server in a cluster) and the local bubblewrap backend is not part of this "
        "version yet"
    )

    async def start(self, spec: SandboxSpec, progress: ProgressCallback) -> Sandbox:
        raise SandboxError(self.message, reason="NoBackend")

    async def connect(self, sandbox: Sandbox) -> SandboxStream:
        raise SandboxError(self.message, reason="NoBackend")

    async def stop(self, sandbox: Sandbox) -> None:
        return None

    async def sweep(self) -> int:
        return 0
