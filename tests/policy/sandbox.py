"""Run the real Claude Code CLI under the policy, in bubblewrap, against the fake API.

bubblewrap gives each run a private mount namespace, so the policy sits at
``/etc/claude-code/`` for the CLI only and the host stays untouched. ``/`` is bound
read-only; only the test's own directory (HOME, course directory, markers) is writable.
The network namespace is shared: the CLI must reach the fake API on 127.0.0.1.

``/etc/claude-code`` does not exist on the host, and bubblewrap cannot create a mount
point inside the read-only ``/``; so ``/etc`` becomes a tmpfs holding a read-only bind
(or the symlink) of each host entry, plus the policy directory.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from jupyter_claude_pods.policy import (
    CLAUDE_CODE_VERSION,
    POLICY_DIR,
    find_claude,
    sandbox_env,
    seed_home,
)
from tests.fakes.anthropic_api import FakeAnthropicAPI, Recorded

#: The fake only checks ``x-api-key``, while a sandbox authenticates with
#: ``ANTHROPIC_AUTH_TOKEN`` (``Authorization: Bearer``): the CLI sends the key as an
#: extra header (``ANTHROPIC_CUSTOM_HEADERS``), so the real auth path stays in use.
FAKE_KEY = "sk-ant-api03-policy-tests-0123456789"
SESSION_TOKEN = "cps-session-token-for-policy-tests"
INSTALL = (
    "npm install --no-save --no-audit --no-fund --prefix .cache/npm "
    f"@anthropic-ai/claude-code@{CLAUDE_CODE_VERSION}"
)


def require(what: str, message: str) -> None:
    """Fail under ``$CI`` (the suite must not silently lose coverage), skip elsewhere."""
    text = f"{what}: {message}"
    if os.environ.get("CI"):
        pytest.fail(text)
    pytest.skip(text)


def require_bwrap() -> str:
    path = shutil.which("bwrap")
    if path is None:
        require("bubblewrap", "`bwrap` is not on PATH; install the `bubblewrap` package.")
    assert path is not None
    return path


def require_claude() -> str:
    path = find_claude()
    if path is None:
        require(
            "Claude Code CLI",
            f"not found (CLAUDE_PODS_CLAUDE_BIN, PATH, .cache/npm). Install it with "
            f"`{INSTALL}` in the repository root.",
        )
    assert path is not None
    return path


def etc_args(policy_dir: Path) -> list[str]:
    """bwrap arguments for an ``/etc`` that is the host's plus ``/etc/claude-code``."""
    args = ["--tmpfs", "/etc"]
    for entry in sorted(Path("/etc").iterdir()):
        if entry.name == "claude-code":  # a host policy must not mix in
            continue
        if entry.is_symlink():
            args += ["--symlink", os.readlink(entry), str(entry)]
        else:
            args += ["--ro-bind", str(entry), str(entry)]
    args += ["--ro-bind", str(policy_dir), "/etc/claude-code"]
    return args


def bwrap_argv(
    root: Path,
    cwd: Path,
    command: Sequence[str],
    policy_dir: Path | None = POLICY_DIR,
    also: Sequence[str] = (),
) -> list[str]:
    """``command`` in a sandbox where only *root* is writable, with the policy mounted.

    Programs (``command[0]``, *also*) are bound back read-only at their real paths and
    at the paths given, in case they live under the ``/tmp`` the sandbox hides.
    """
    argv = ["bwrap", "--ro-bind", "/", "/", "--tmpfs", "/tmp", "--proc", "/proc"]
    argv += ["--dev", "/dev"]
    if policy_dir is not None:
        argv += etc_args(policy_dir)
    binds: set[tuple[str, str]] = set()
    for program in (command[0], *also):
        real = Path(program).resolve()
        binds.add((str(real), str(real)))
        # Also at the path as given (a venv's python, npm's .bin symlink) when the
        # sandbox's own /tmp hides it (CI may clone the repository under /tmp).
        given = Path(program).absolute()
        if given != real and given.is_relative_to("/tmp"):
            binds.add((str(real), str(given)))
    for source, target in sorted(binds, key=lambda b: b[1]):
        argv += ["--ro-bind", source, target]
    argv += ["--bind", str(root), str(root), "--unshare-pid", "--die-with-parent"]
    argv += ["--chdir", str(cwd), "--", *command]
    return argv


def cli_env(home: Path, api: FakeAnthropicAPI, **extra: str) -> dict[str, str]:
    """The CLI's whole environment (``env -i`` style: nothing leaks in from pytest)."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        **sandbox_env(),
        "ANTHROPIC_BASE_URL": api.url,
        "ANTHROPIC_AUTH_TOKEN": SESSION_TOKEN,
        "ANTHROPIC_CUSTOM_HEADERS": f"x-api-key: {FAKE_KEY}",
        # A broken test must fail fast, not retry a 401 for minutes.
        "CLAUDE_CODE_MAX_RETRIES": "0",
        **extra,
    }


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    @property
    def result(self) -> dict[str, Any]:
        """The ``--output-format json`` result."""
        data = json.loads(self.stdout)
        assert isinstance(data, dict), self.stdout
        return data

    def __str__(self) -> str:
        return f"rc={self.returncode}\nstdout: {self.stdout}\nstderr: {self.stderr}"


async def run(
    argv: Sequence[str],
    env: Mapping[str, str],
    timeout: float = 30,
    stdin: bytes = b"",
    cwd: Path | None = None,
) -> Run:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=dict(env),
        cwd=cwd,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"{argv[-1]!r} did not finish within {timeout} s")
    return Run(proc.returncode or 0, out.decode(), err.decode())


@dataclass
class Workspace:
    """One test's sandbox tree: a seeded HOME, a course directory and a marker path."""

    root: Path

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def course(self) -> Path:
        return self.root / "course"

    @property
    def marker(self) -> Path:
        """Created only if a command the policy forbids actually ran."""
        return self.root / "PWNED"

    def create(self) -> None:
        self.home.mkdir()
        self.course.mkdir()
        seed_home(self.home, str(self.course))
        (self.course / "notes.txt").write_text(NOTES)

    def write_json(self, relative: str, data: Any) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))
        return path


NOTES = "COURSE-NOTES-CONTENT-4242\nsecond line\n"


def messages_requests(api: FakeAnthropicAPI) -> list[dict[str, Any]]:
    """The bodies of every ``POST /v1/messages`` the fake received, in order."""
    return [r.json for r in api.requests if _is_messages(r)]


def _is_messages(rec: Recorded) -> bool:
    return rec.method == "POST" and rec.path == "/v1/messages"


def tool_names(body: dict[str, Any]) -> set[str]:
    return {tool["name"] for tool in body.get("tools", [])}


def tool_result(api: FakeAnthropicAPI, tool_name: str) -> dict[str, Any]:
    """The ``tool_result`` block the CLI sent back for the (scripted) *tool_name* call."""
    ids: set[str] = set()
    for body in messages_requests(api):
        for message in body["messages"]:
            content = message.get("content")
            if not isinstance(content, list):
                continue
            for block in content:
                if block.get("type") == "tool_use" and block["name"] == tool_name:
                    ids.add(block["id"])
                if block.get("type") == "tool_result" and block["tool_use_id"] in ids:
                    assert isinstance(block, dict)
                    return block
    raise AssertionError(f"no tool_result for the {tool_name} call reached the API")


def result_text(block: dict[str, Any]) -> str:
    content = block.get("content")
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or [])
