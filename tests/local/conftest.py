"""Fixtures: a Jupyter server whose terminals are local bubblewrap sandboxes.

The server embeds the real key proxy; its upstream is the fake Messages API on
127.0.0.1 (``CLAUDE_PODS_UPSTREAM_URL``), which accepts only the real key. Nothing here
contacts a non-loopback address.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.anthropic_api import FakeAnthropicAPI
from tests.terminals.client import TermClient

SECRET_KEY = "sk-ant-api03-REAL-KEY-must-never-leave-the-proxy-0123456789"
#: A piece of the key to search for inside sandboxes (the key itself never goes in).
KEY_PIECE = "must-never-leave"
SHELL = ["bash", "--norc", "--noprofile", "-i"]


def require_bwrap() -> None:
    if shutil.which("bwrap") is None:
        message = "bubblewrap is not installed (apt-get install bubblewrap)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A short, private state directory (Unix socket paths are limited to 108 bytes).

    As root, sandboxes run as ``nobody``, which must be able to search it (0711); the
    parent ``/tmp`` is searchable by everyone.
    """
    require_bwrap()
    path = Path(tempfile.mkdtemp(prefix="cpods-", dir="/tmp"))
    path.chmod(0o711 if os.geteuid() == 0 else 0o700)
    yield path
    for root, dirs, _files in os.walk(path):  # a test may have made something 0
        for d in dirs:
            (Path(root) / d).chmod(stat.S_IRWXU)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def fake_upstream(io_loop: Any) -> Iterator[FakeAnthropicAPI]:
    api = FakeAnthropicAPI((SECRET_KEY,))
    io_loop.run_sync(api.start)
    yield api
    io_loop.run_sync(api.stop)


@pytest.fixture
def server_env(monkeypatch: pytest.MonkeyPatch, fake_upstream: FakeAnthropicAPI) -> None:
    """The server's environment, as an operator would set it (tests may change it)."""
    for name in (
        "CLAUDE_PODS_BACKEND",
        "CLAUDE_PODS_TOKEN_SECRET",
        "CLAUDE_PODS_TOKEN_SECRET_FILE",
        "CLAUDE_PODS_PROXY_ADMIN_URL",
        "CLAUDE_PODS_KEY_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET_KEY)
    monkeypatch.setenv("CLAUDE_PODS_UPSTREAM_URL", fake_upstream.url)


@pytest.fixture
def extra_config() -> dict[str, Any]:
    """Extra traitlets config, merged per class (tests override this)."""
    return {}


@pytest.fixture
def jp_server_config(
    server_env: None, state_dir: Path, extra_config: dict[str, Any]
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "ServerApp": {
            "jpserver_extensions": {"jupyter_claude_pods": True, "jupyter_server_terminals": True}
        },
        "SandboxTerminalManager": {"backend": "local"},
        "LocalBackend": {
            "home_base": str(state_dir / "state"),
            "command": SHELL,
            "extra_env": {"PS1": "$ "},
        },
    }
    for section, values in extra_config.items():
        config.setdefault(section, {}).update(values)
    return config


@pytest.fixture
def jp_serverapp(jp_serverapp: Any, io_loop: Any) -> Iterator[Any]:
    """The stock fixture, with our extension stopped at the end (as a real stop does)."""
    yield jp_serverapp
    io_loop.run_sync(jp_serverapp.extension_manager.stop_all_extensions)


@pytest.fixture
def backend(manager: Any) -> Any:
    return manager.sandbox_backend


async def attach(jp_ws_fetch: Any, name: str) -> TermClient:
    return TermClient(await jp_ws_fetch("terminals", "websocket", name))


@pytest.fixture
def open_terminal(jp_fetch: Any, jp_ws_fetch: Any) -> Any:
    """``await open_terminal()`` → (name, TermClient) of a new terminal."""

    async def _open(name: str | None = None) -> tuple[str, TermClient]:
        body = json.dumps({"name": name} if name else {})
        resp = await jp_fetch("api", "terminals", method="POST", body=body)
        model = json.loads(resp.body)
        return model["name"], await attach(jp_ws_fetch, model["name"])

    return _open


_markers = itertools.count(1)


async def run(term: TermClient, command: str, timeout: float = 20) -> str:
    """Type *command* at the prompt and return what it printed.

    The output is framed by markers the shell computes (``$((…))``), so the echo of the
    typed command line itself never matches them.
    """
    n = next(_markers)
    start, end = f"<<{n}>>", f"<</{n}>>"
    term.stdin(f"echo '<<'$(({n}))'>>'; {command}; echo '<</'$(({n}))'>>'\r")
    out = await term.expect(lambda o: start in o and end in o.split(start)[-1], timeout)
    return out.split(start)[-1].split(end)[0]


def pids_in_namespace(pidns: int) -> list[int]:
    """Host pids of processes still running in the PID namespace with inode *pidns*.

    Zombies do not count: bwrap exits as soon as its init reports the program's status,
    so the finished init is reaped by the machine's init (at its own pace), not by us.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "ns" / "pid").stat().st_ino != pidns:
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X"):
            found.append(int(entry.name))
    return found
