"""The local backend: each sandbox is a bubblewrap process tree under a PTY.

For ``jupyter lab`` on a machine without a cluster. :mod:`.bwrap` builds the command
line (a pure function), :mod:`.stream` drives the PTY and reaps the process from the
event loop, :mod:`.forwarder` runs inside the sandbox to relay its loopback port to the
key proxy's Unix socket, :mod:`.layout` prepares the host side (state directories,
what each sandbox binds), :mod:`.process` starts and stops bubblewrap, and
:mod:`.backend` ties them to the terminal layer.
"""

from __future__ import annotations

from .backend import LocalBackend

__all__ = ["LocalBackend"]
