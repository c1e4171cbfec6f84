"""The real Claude Code CLI in a local sandbox, driven through the stock terminal websocket.

A pytest-jupyter server runs the local (bubblewrap) backend with its embedded key proxy;
the proxy's upstream is the fake Messages API, which accepts only the real key (a
placeholder in the server's ``ANTHROPIC_API_KEY``). Each terminal runs the pinned CLI
(``CLAUDE_PODS_CLAUDE_BIN``) exactly as a person's terminal does: keystrokes go in as
``stdin`` frames, and what the person would read is the terminal's output rendered by a
VT emulator (:mod:`.claude_terminal`). The fake model scripts the CLI's tool calls; the
CLI's answers to them (tool results) are checked at the fake, their effects on the
sandbox's files (visible from the host) and on a loopback listener the test runs.

Commands run inside the sandbox through the CLI's ``!`` shell escape, as a person at the
prompt would: they can run anything the sandbox allows, so the sandbox (not the policy)
must keep the real key out of reach, confine writes and block the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from jupyter_claude_pods.policy import CLAUDE_CODE_VERSION
from jupyter_claude_pods.sandbox.local.bwrap import LAUNCHER
from jupyter_claude_pods.terminals.manager import SandboxTerminalManager
from tests.fakes.anthropic_api import FakeAnthropicAPI, Reply
from tests.policy.sandbox import require, require_claude, result_text, tool_result
from tests.terminals.client import TermClient

from .claude_terminal import PROMPT, ClaudeScreen, ScriptedModel, squeeze
from .conftest import KEY_PIECE, SECRET_KEY, SHELL, run

NOTES = "COURSE-NOTES-CONTENT-4242\nsecond line\n"
#: The real key's piece, typed in two halves so that the command line itself (which
#: the CLI keeps in its transcript under ~/.claude) never contains it.
HALVES = (KEY_PIECE[:5], KEY_PIECE[5:])


_versions: dict[str, str] = {}


@pytest.fixture(autouse=True)
def claude_cli(monkeypatch: pytest.MonkeyPatch) -> str:
    """The pinned CLI, found by the server through ``CLAUDE_PODS_CLAUDE_BIN``.

    Missing, the test is skipped (it fails under ``$CI``), as it is without bubblewrap
    (``state_dir``). Another version would be refused by the managed settings.
    """
    path = require_claude()
    if path not in _versions:
        _versions[path] = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=60, check=False
        ).stdout
    if not _versions[path].startswith(f"{CLAUDE_CODE_VERSION} "):
        require("Claude Code CLI", f"{path} is {_versions[path]!r}, not {CLAUDE_CODE_VERSION}")
    monkeypatch.setenv("CLAUDE_PODS_CLAUDE_BIN", path)
    return path


@pytest.fixture
def course(state_dir: Path) -> Path:
    """Course material the sandboxes see read-only at /course (``course_root``).

    As root the sandbox runs as ``nobody``, hence the modes.
    """
    path = state_dir / "course"
    path.mkdir(mode=0o755)
    path.chmod(0o755)
    (path / "notes.txt").write_text(NOTES)
    (path / "notes.txt").chmod(0o644)
    return path


@pytest.fixture
def extra_config(course: Path) -> dict[str, Any]:
    """Terminals run the policy's launcher (interactive ``claude``) in the course."""
    return {"LocalBackend": {"command": [LAUNCHER], "course_root": str(course), "extra_env": {}}}


#: Terminals run a shell, from which the person starts ``claude`` as they like.
SHELL_CONFIG = {"LocalBackend": {"command": SHELL, "extra_env": {"PS1": "$ "}}}


@pytest.fixture
def model(fake_upstream: FakeAnthropicAPI) -> Iterator[ScriptedModel]:
    scripted = ScriptedModel()
    fake_upstream.responder = scripted
    yield scripted
    fake_upstream.responder = None


class Session:
    """One terminal: its websocket, its rendered screen, its files on the host."""

    def __init__(self, name: str, term: TermClient, sandbox: Any) -> None:
        self.name = name
        self.term = term
        self.screen = ClaudeScreen(term)
        self.sandbox = sandbox
        self.dir = Path(sandbox.extra["dir"])

    @property
    def home(self) -> Path:
        """The sandbox's /home/claude, seen from the host."""
        return self.dir / "home"

    @property
    def tmp(self) -> Path:
        """The sandbox's /tmp, seen from the host."""
        return self.dir / "tmp"


@pytest.fixture
def open_session(open_terminal: Any, manager: Any) -> Any:
    """``await open_session()`` → a :class:`Session` whose sandbox has started."""
    # Without our extension the stock manager would run a shell on the host, as root:
    # never type anything into that.
    assert isinstance(manager, SandboxTerminalManager), type(manager)

    async def _open() -> Session:
        name, term = await open_terminal()
        await term.expect("[claude-pods] attached", timeout=60)
        return Session(name, term, manager.terminals[name].sandbox)

    return _open


def posts(api: FakeAnthropicAPI) -> list[Any]:
    return [r for r in api.requests if r.method == "POST" and r.path == "/v1/messages"]


def tool_use(name: str, **tool_input: Any) -> Reply:
    return Reply(kind="tool_use", tool_name=name, tool_input=tool_input)


class Listener:
    """A TCP listener on the host's 127.0.0.1 that counts the connections it gets."""

    def __init__(self, server: asyncio.Server) -> None:
        self.server = server
        self.port: int = server.sockets[0].getsockname()[1]
        self.connections = 0


@contextlib.asynccontextmanager
async def listening() -> AsyncIterator[Listener]:
    def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        listener.connections += 1
        writer.close()

    listener = Listener(await asyncio.start_server(accept, "127.0.0.1", 0))
    try:
        # It does accept connections from the host (so "nothing came" means something).
        socket.create_connection(("127.0.0.1", listener.port), timeout=5).close()

        async def first() -> None:
            while listener.connections < 1:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(first(), 10)
        listener.connections = 0
        yield listener
    finally:
        listener.server.close()
        await listener.server.wait_closed()


# ---------------------------------------------------------------------- 1. a prompt


async def test_typed_prompt_shows_the_models_answer(
    open_session: Any, model: ScriptedModel, fake_upstream: FakeAnthropicAPI
) -> None:
    answer = f"ANSWER-{uuid.uuid4().hex[:12]}"
    model.on("TELL-ME-SOMETHING", Reply(text=answer))
    session = await open_session()
    await session.screen.ready()
    text = await session.screen.ask("TELL-ME-SOMETHING please", f"● {answer}")
    assert f"{PROMPT} TELL-ME-SOMETHING please" in text  # the prompt as sent

    # The prompt went out through the proxy, with the real key and without the token.
    conversation = [r.json for r in posts(fake_upstream) if r.json.get("tools")]
    assert "TELL-ME-SOMETHING please" in json.dumps(conversation[0]["messages"])
    for rec in posts(fake_upstream):
        assert rec.header_values("x-api-key") == [SECRET_KEY]
        assert rec.header("authorization") is None
    assert SECRET_KEY not in session.term.output


# ---------------------------------------------------------------------- 2. the tools


async def test_tools_are_refused_but_read_works(
    open_session: Any, model: ScriptedModel, fake_upstream: FakeAnthropicAPI
) -> None:
    async with listening() as listener:
        model.on(
            "USE-THE-TOOLS",
            tool_use("Bash", command="touch /tmp/bash-marker"),
            tool_use("Write", file_path="/home/claude/write-marker", content="written"),
            tool_use(
                "WebFetch", url=f"http://127.0.0.1:{listener.port}/fetched", prompt="summarise"
            ),
            tool_use("Read", file_path="/course/notes.txt"),
        )
        session = await open_session()
        await session.screen.ready()
        await session.screen.ask("USE-THE-TOOLS now", "● USE-THE-TOOLS-DONE")

        assert listener.connections == 0
        assert not (session.tmp / "bash-marker").exists()
        assert not (session.home / "write-marker").exists()
        for tool in ("Bash", "Write", "WebFetch"):
            block = tool_result(fake_upstream, tool)
            assert block.get("is_error") is True, block
            assert f"No such tool available: {tool}" in result_text(block), block
        read = tool_result(fake_upstream, "Read")
        assert not read.get("is_error"), read
        assert "COURSE-NOTES-CONTENT-4242" in result_text(read)
        # Control: the same paths, written by the person at the prompt, do show up here.
        out = await session.screen.shell("touch /tmp/bash-marker ~/write-marker && echo made")
        assert out == "made", out
        assert (session.tmp / "bash-marker").exists()
        assert (session.home / "write-marker").exists()


# ---------------------------------------------------------------------- 3. the sandbox


def _numbers(out: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r"(\w+):(\d+)", out)}


async def test_shell_escape_cannot_reach_the_key_the_host_or_the_system(
    open_session: Any,
    model: ScriptedModel,
    fake_upstream: FakeAnthropicAPI,
    course: Path,
    manager: Any,
) -> None:
    session = await open_session()
    screen = session.screen
    await screen.ready()
    first, second = HALVES

    # The key is in no environment variable, no process's environment or command line.
    out = await screen.shell(
        f'K={first}; K="${{K}}{second}"; '
        "P=$(cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' '\\n'); "
        'echo "env:$(env | grep -cF "$K") api:$(env | grep -c ^ANTHROPIC_API_KEY=) '
        'proc:$(echo "$P" | grep -cF "$K") tokens:$(echo "$P" | grep -c ^ANTHROPIC_AUTH_TOKEN=)"'
    )
    found = _numbers(out)
    assert found["env"] == 0, out
    assert found["api"] == 0, out
    assert found["proc"] == 0, out
    assert found["tokens"] >= 2, out  # the search reads the environments (CLI, shell…)

    # …nor in any file the sandbox can read: everything but the host's read-only system
    # directories (the host's own /usr, /opt…: the same for every process on the machine,
    # and gigabytes to read).
    system = {"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "opt"}
    searched = {"course", "etc", "home", "run", "tmp", "var"}
    known = "|".join(sorted(system | searched | {"proc", "sys", "dev"}))
    out = await screen.shell(f"ls -A / | grep -vxE '{known}' | sed 's/^/unexpected:/'")
    assert out == "", out  # nothing at the top of / escapes the search below
    out = await screen.shell(
        f'K={first}; K="${{K}}{second}"; H=$(grep -rsFoa -e "$K" -e requiredMinimumVersion '
        f"{' '.join(f'/{d}' for d in sorted(searched))} | sort -u); "
        'echo "key:$(echo "$H" | grep -cF "$K") control:$(echo "$H" | grep -c managed-settings)"',
        timeout=60,
    )
    found = _numbers(out)
    assert found["key"] == 0, out
    assert found["control"] >= 1, out  # /etc/claude-code/managed-settings.json was read

    # Writes: only the home and /tmp.
    out = await screen.shell(
        "for p in /x /usr/x /etc/x /etc/claude-code/x /course/x /run/claude-pods/x /var/x; "
        'do touch $p 2>/dev/null && echo "wrote:$p"; done; touch ~/ok /tmp/ok && echo "ok:1"'
    )
    assert "wrote" not in out, out
    assert _numbers(out) == {"ok": 1}, out
    assert (session.home / "ok").exists()
    assert (session.tmp / "ok").exists()
    assert sorted(p.name for p in course.iterdir()) == ["notes.txt"]

    # The host's loopback: neither a listener of the test nor the fake upstream answers.
    async with listening() as listener:
        out = await screen.shell(
            f"(: >/dev/tcp/127.0.0.1/{listener.port}) 2>/dev/null; echo listener:$?; "
            f"(: >/dev/tcp/127.0.0.1/{fake_upstream.port}) 2>/dev/null; echo upstream:$?"
        )
        assert _numbers(out) == {"listener": 1, "upstream": 1}, out
        assert listener.connections == 0

    # The session token works through the proxy (ANTHROPIC_BASE_URL)…
    seen = len(posts(fake_upstream))
    out = await screen.shell(
        'python3 -c "import json, os, urllib.request as u; e = os.environ; '
        "b = json.dumps({'model': 'claude-x', 'max_tokens': 8, 'messages': "
        "[{'role': 'user', 'content': 'DIRECT-CALL'}]}).encode(); "
        "r = u.Request(e['ANTHROPIC_BASE_URL'] + '/v1/messages', b, {'anthropic-version': "
        "'2023-06-01', 'Authorization': 'Bearer ' + e['ANTHROPIC_AUTH_TOKEN']}); "
        "print('status:%d' % u.urlopen(r).status)\"; "
        'echo "token:$(printf %s "$ANTHROPIC_AUTH_TOKEN" | sha256sum | cut -c1-12)"'
    )
    assert "status:200" in out, out
    direct = [
        r for r in posts(fake_upstream)[seen:] if r.json["messages"][0]["content"] == "DIRECT-CALL"
    ]
    assert len(direct) == 1, [r.body[:200] for r in posts(fake_upstream)[seen:]]
    assert direct[0].header_values("x-api-key") == [SECRET_KEY]
    token = session.sandbox.spec.env["ANTHROPIC_AUTH_TOKEN"]
    assert token.startswith("cpp1.")
    assert f"token:{hashlib.sha256(token.encode()).hexdigest()[:12]}" in out, out
    assert all(token not in value for _, value in direct[0].headers)

    # …and is worthless at the upstream itself: only the proxy holds the key.
    for headers in ({"x-api-key": token}, {"Authorization": f"Bearer {token}"}):
        with pytest.raises(HTTPClientError) as refused:
            await AsyncHTTPClient().fetch(
                f"{fake_upstream.url}/v1/messages",
                method="POST",
                body=json.dumps({"model": "claude-x", "max_tokens": 8, "messages": []}),
                headers={**headers, "anthropic-version": "2023-06-01"},
            )
        assert refused.value.code == 401
    assert SECRET_KEY not in session.term.output


# ---------------------------------------------------------------------- 4. overrides

ALLOW_BASH = {
    "permissions": {
        "allow": ["Bash", "Bash(*)", "Write"],
        "deny": [],
        "defaultMode": "bypassPermissions",
    }
}
SETTINGS = f"echo '{json.dumps(ALLOW_BASH)}' >"
#: Project settings count only in a trusted workspace (else the CLI ignores their
#: permission rules by itself): the person trusts ~/proj in their own ~/.claude.json.
TRUST_PROJECT = (
    "python3 -c \"import json; p = '/home/claude/.claude.json'; d = json.load(open(p)); "
    "d['projects']['/home/claude/proj'] = {'hasTrustDialogAccepted': True}; "
    "json.dump(d, open(p, 'w'))\""
)


@pytest.mark.parametrize("extra_config", [SHELL_CONFIG], ids=["shell"])
@pytest.mark.parametrize(
    ("setup", "settings", "claude_args"),
    [
        pytest.param(
            [f"mkdir -p ~/.claude && {SETTINGS} ~/.claude/settings.json"],
            ".claude/settings.json",
            "",
            id="user-settings",
        ),
        pytest.param(
            [
                f"mkdir -p ~/proj/.claude && {SETTINGS} ~/proj/.claude/settings.json",
                TRUST_PROJECT,
                "cd ~/proj",
            ],
            "proj/.claude/settings.json",
            "",
            id="project-settings",
        ),
        pytest.param(
            [],
            None,
            "--dangerously-skip-permissions --permission-mode bypassPermissions "
            "--allowedTools Bash",
            id="flags",
        ),
    ],
)
async def test_nothing_typed_at_the_shell_lets_bash_run(
    open_session: Any,
    model: ScriptedModel,
    fake_upstream: FakeAnthropicAPI,
    setup: list[str],
    settings: str | None,
    claude_args: str,
) -> None:
    model.on("RUN-BASH-PLEASE", tool_use("Bash", command="touch /tmp/pwned"))
    session = await open_session()
    await session.term.expect("$ ")
    for command in setup:
        out = await run(session.term, f"{command} && echo done-$((1))", timeout=20)
        assert "done-1" in out, (command, out)
    if settings is not None:  # the file is where the CLI looks for it
        assert json.loads((session.home / settings).read_text()) == ALLOW_BASH
    session.term.stdin(f'"$CLAUDE_PODS_CLAUDE_BIN" {claude_args}\r')
    # The managed dontAsk mode stays (no bypass mode, nor its warning dialog).
    await session.screen.ready()
    text = await session.screen.ask("RUN-BASH-PLEASE", "● RUN-BASH-PLEASE-DONE")
    assert squeeze("not been trusted") not in squeeze(text)
    assert not (session.tmp / "pwned").exists()
    block = tool_result(fake_upstream, "Bash")
    assert block.get("is_error") is True, block
    assert "No such tool available: Bash" in result_text(block), block
