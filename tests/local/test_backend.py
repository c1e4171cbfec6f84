"""Backend choice, configuration problems, the key's absence, crashes and leftovers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from jupyter_claude_pods.sandbox.local import LocalBackend
from jupyter_claude_pods.sandbox.unavailable import UnavailableBackend
from jupyter_claude_pods.terminals import SandboxTerminalManager

from .conftest import pids_in_namespace, run

REPO = Path(__file__).resolve().parents[2]


def backend_of(**traits: Any) -> Any:
    return SandboxTerminalManager(shell_command=[], extra_env={}, **traits).sandbox_backend


def test_local_is_chosen_by_env_and_when_no_cluster(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("CLAUDE_PODS_BACKEND", raising=False)
    assert isinstance(backend_of(), LocalBackend)
    monkeypatch.setenv("CLAUDE_PODS_BACKEND", "local")
    assert isinstance(backend_of(backend="kubernetes"), LocalBackend)


def test_missing_bubblewrap_gives_an_explaining_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAUDE_PODS_BACKEND", "local")
    from traitlets.config import Config

    config = Config({"LocalBackend": {"bwrap_path": "/nonexistent/bwrap"}})
    backend = SandboxTerminalManager(config=config, shell_command=[], extra_env={}).sandbox_backend
    assert isinstance(backend, UnavailableBackend)
    assert "bubblewrap is not installed" in backend.message
    assert "apt-get install bubblewrap" in backend.message


@pytest.mark.parametrize("extra_config", [{"LocalBackend": {"bwrap_path": "/nonexistent/bwrap"}}])
async def test_terminal_says_how_to_install_bubblewrap(open_terminal: Any) -> None:
    _name, term = await open_terminal()
    out = await term.expect("open a new one to retry")
    assert "bubblewrap is not installed" in out
    assert "apt-get install bubblewrap" in out


@pytest.fixture
def no_key(monkeypatch: pytest.MonkeyPatch, server_env: None) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")


async def test_without_a_key_the_terminal_says_how_to_provide_one(
    no_key: None, open_terminal: Any, backend: Any
) -> None:
    _name, term = await open_terminal()
    out = await term.expect("$ ")
    assert "no Anthropic API key is configured for this Jupyter server" in out
    assert "export ANTHROPIC_API_KEY=" in out
    out = await run(term, "env | grep ^ANTHROPIC_ | cut -d= -f1; echo end")
    assert out.split() == ["end"]  # neither a token nor a proxy URL
    assert not backend.proxy.running


@pytest.mark.parametrize(
    "extra_config", [{"LocalBackend": {"command": ["/run/claude-pods/bin/claude-pods-launch"]}}]
)
async def test_the_launcher_also_explains_a_missing_key(no_key: None, open_terminal: Any) -> None:
    claude_or_skip()
    _name, term = await open_terminal()
    out = await term.expect("Not logged in", timeout=60)  # the CLI's own words
    assert "The administrator must set ANTHROPIC_API_KEY" in out  # the launcher's


async def test_bad_upstream_is_reported(
    monkeypatch: pytest.MonkeyPatch, server_env: None, open_terminal: Any
) -> None:
    monkeypatch.setenv("CLAUDE_PODS_UPSTREAM_URL", "http://api.example.com")  # never contacted
    _name, term = await open_terminal()
    out = await term.expect("$ ")
    assert "the key proxy of this Jupyter server could not start" in out
    assert "plain http upstream" in out


@pytest.mark.parametrize(
    "extra_config", [{"LocalBackend": {"python_path": "/usr/bin/no-such-python3"}}]
)
async def test_missing_python_is_reported(open_terminal: Any) -> None:
    _name, term = await open_terminal()
    out = await term.expect("open a new one to retry")
    assert "/usr/bin/no-such-python3 is needed inside the sandbox" in out


@pytest.mark.parametrize(
    "extra_config",
    [{"LocalBackend": {"forward_proxy": False, "python_path": "/usr/bin/no-such-python3"}}],
)
async def test_without_the_relay_the_program_runs_directly(
    open_terminal: Any, manager: Any, backend: Any
) -> None:
    name, term = await open_terminal()
    await term.expect("$ ")
    out = await run(term, "env | grep -c ^ANTHROPIC_; ps -e -o comm= > ~/ps; sort ~/ps")
    assert out.split() == ["0", "bash", "bwrap", "ps"]
    assert isinstance(manager.terminals[name].sandbox.extra["pidns"], int)
    assert backend.proxy is not None
    assert not backend.proxy.running


@pytest.mark.parametrize("extra_config", [{"LocalBackend": {"command": ["no-such-program-here"]}}])
async def test_program_that_cannot_start_is_an_error(
    open_terminal: Any, manager: Any, backend: Any
) -> None:
    name, term = await open_terminal()
    out = await term.expect("open a new one to retry")
    assert (
        "the sandbox could not be started: claude-pods: no-such-program-here: command not found"
        in out
    )
    assert manager.terminals[name].state == "failed"
    await manager.wait_reaped()
    assert list(backend._layout.sessions.iterdir()) == []


@pytest.fixture
def course(state_dir: Path) -> Path:
    path = state_dir / "course"
    (path / "week1").mkdir(parents=True)
    (path / "week1" / "notes.md").write_text("# Week 1\n")
    path.chmod(0o755)
    (path / "week1").chmod(0o755)
    return path


@pytest.fixture
def extra_config(course: Path) -> dict[str, Any]:
    return {"LocalBackend": {"course_root": str(course)}}


async def test_course_is_read_only_and_the_working_directory(open_terminal: Any) -> None:
    _name, term = await open_terminal()
    await term.expect("$ ")
    out = await run(term, "pwd; cat week1/notes.md; touch x 2>&1; echo $CLAUDE_PODS_COURSE_DIR")
    assert "/course" in out.split()[0]
    assert "# Week 1" in out
    assert "Read-only file system" in out
    out = await run(
        term,
        'python3 -c \'import json,os; d=json.load(open(os.path.expanduser("~/.claude.json"))); print(sorted(d["projects"]), d["hasCompletedOnboarding"])\'',
    )
    assert "['/course'] True" in out  # the seeded home trusts the course directory


def claude_or_skip() -> str:
    from jupyter_claude_pods.policy import find_claude

    found = find_claude()
    if found is None:
        message = "the Claude Code CLI is not installed (see scripts/test.sh)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


async def test_claude_code_answers_through_the_relay_and_the_proxy(
    open_terminal: Any, fake_upstream: Any
) -> None:
    claude_or_skip()
    _name, term = await open_terminal()
    await term.expect("$ ")
    out = await run(term, '"$CLAUDE_PODS_CLAUDE_BIN" --version; readlink ~/.local/bin/claude')
    assert "(Claude Code)" in out
    assert "/run/claude-pods/claude" in out  # where the CLI looks for its own command
    out = await run(term, 'timeout 60 "$CLAUDE_PODS_CLAUDE_BIN" -p "say hi" 2>&1', timeout=90)
    assert "FAKE Anthropic API speaking" in out, out
    assert fake_upstream.requests, "nothing reached the upstream"


CRASHING_SERVER = """
import asyncio, json, sys
from jupyter_claude_pods.sandbox.local import LocalBackend
from jupyter_claude_pods.sandbox.spec import SandboxSpec

async def main():
    backend = LocalBackend(home_base=sys.argv[1], command=["sleep", "1000"])
    await backend.startup()
    sandbox = await backend.start(SandboxSpec(session_id="c0ffee00", user="u", terminal="1"), print)
    print(json.dumps({"pidns": sandbox.extra["pidns"], "pid": sandbox.extra["pid"]}), flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_sandboxes_die_with_a_crashed_server_and_are_swept_later(
    state_dir: Path, server_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = state_dir / "state"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", textwrap.dedent(CRASHING_SERVER), str(base),
        stdout=asyncio.subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    assert proc.stdout is not None
    line = b""
    while not line.startswith(b"{"):
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line, "the crashing server ended early"
    info = json.loads(line)
    assert pids_in_namespace(info["pidns"])
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    # --die-with-parent: the kernel kills the sandbox when its server dies.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while pids_in_namespace(info["pidns"]):
        assert loop.time() < deadline, "the sandbox outlived its server"
        await asyncio.sleep(0.02)
    leftover = list(base.iterdir())
    assert len(leftover) == 1
    assert (leftover[0] / "sessions" / "c0ffee00" / "home").is_dir()

    # The next server removes what the crashed one left (and never a live server's).
    live = LocalBackend(home_base=str(base), command=["true"])
    await live.startup()
    try:
        again = LocalBackend(home_base=str(base), command=["true"])
        await again.startup()
        try:
            assert await again.sweep() == 1
            assert not leftover[0].exists()
            assert live._layout.run_dir.exists()  # locked: left alone
            assert await again.sweep() == 0
        finally:
            await again.shutdown()
    finally:
        await live.shutdown()
    assert list(base.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="only a root server drops to another uid")
async def test_root_state_dir_must_be_reachable_by_the_sandbox_user(
    tmp_path: Path, server_env: None
) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    backend = LocalBackend(home_base=str(private / "state"), command=["true"])
    await backend.startup()
    try:
        assert backend._config_error is not None
        assert "is not reachable by the sandbox user (uid 65534)" in backend._config_error
    finally:
        await backend.shutdown()


def test_state_dir_must_be_private(tmp_path: Path) -> None:
    from jupyter_claude_pods.sandbox.local.layout import check_base

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(Exception, match="no one else can write to"):
        check_base(shared, 0o700)


async def read_until(stream: Any, marker: bytes, timeout: float = 10.0) -> bytes:
    out = b""
    while marker not in out:
        chunk = await asyncio.wait_for(stream.read(), timeout)
        assert chunk, f"end of stream before {marker!r}: {out!r}"
        out += chunk
    return out


async def test_reconnect_gets_a_fresh_stream_to_the_same_program(
    state_dir: Path, server_env: None
) -> None:
    from jupyter_claude_pods.sandbox.spec import SandboxSpec

    backend = LocalBackend(
        home_base=str(state_dir / "direct"),
        command=["bash", "--norc", "--noprofile", "-i"],
        extra_env={"PS1": "$ "},
    )
    await backend.startup()
    try:
        sandbox = await backend.start(
            SandboxSpec(session_id="ab12cd34", user="u", terminal="1"), print
        )
        first = await backend.connect(sandbox)
        await read_until(first, b"$ ")
        await first.write(b"export MARK=$((40 + 2))\r")
        await read_until(first, b"$ ")
        second = await backend.connect(sandbox)
        assert await first.read() == b""  # the old stream is detached
        await second.write(b"echo mark=$MARK\r")
        assert b"mark=42" in await read_until(second, b"mark=42")
        await second.write(b"exit 5\r")
        while await second.read():
            pass
        assert second.exit_status == 5
        await backend.stop(sandbox)
        with pytest.raises(Exception, match="gone"):
            await backend.connect(sandbox)
    finally:
        await backend.shutdown()


@pytest.mark.parametrize(
    ("program", "quick"),
    [
        ("trap 'exit 0' HUP; echo ready; while :; do sleep 0.05; done", True),
        ("trap '' HUP; echo ready; while :; do sleep 0.05; done", False),
    ],
)
async def test_stop_hangs_up_then_kills(
    state_dir: Path, server_env: None, program: str, quick: bool
) -> None:
    from jupyter_claude_pods.sandbox.spec import SandboxSpec

    backend = LocalBackend(
        home_base=str(state_dir / "direct"), command=["sh", "-c", program], stop_grace=1.5
    )
    await backend.startup()
    try:
        sandbox = await backend.start(
            SandboxSpec(session_id="ab12cd35", user="u", terminal="1"), print
        )
        stream = await backend.connect(sandbox)
        await read_until(stream, b"ready")
        loop = asyncio.get_running_loop()
        began = loop.time()
        await backend.stop(sandbox)
        took = loop.time() - began
        # A program that honours SIGHUP ends at once; one that ignores it is killed.
        assert (took < 1.0) if quick else (took >= 1.5), took
        assert pids_in_namespace(sandbox.extra["pidns"]) == []
        assert not sandbox.extra["dir"].exists()
    finally:
        await backend.shutdown()


def test_key_holders_finds_readable_files_with_the_key(tmp_path: Path) -> None:
    from jupyter_claude_pods.sandbox.local.backend import key_holders

    key = b"sk-ant-api03-some-real-key"
    (tmp_path / "profile.d").mkdir()
    (tmp_path / "environment").write_bytes(b"PATH=/usr/bin\nANTHROPIC_API_KEY=" + key + b"\n")
    (tmp_path / "profile.d" / "ok.sh").write_text("export EDITOR=vi\n")
    private = tmp_path / "private"
    private.write_bytes(key)
    private.chmod(0o600)
    (tmp_path / "link").symlink_to(tmp_path / "environment")
    (tmp_path / "big").write_bytes(key + b"x" * (2 << 20))

    def others_can_read(_path: str, st: os.stat_result) -> bool:
        return bool(st.st_mode & 0o004)

    found = key_holders([key, b""], others_can_read, root=str(tmp_path))
    assert found == [str(tmp_path / "environment")]
    assert key_holders([b"short"], others_can_read, root=str(tmp_path)) == []


@pytest.fixture
def key_holder(monkeypatch: pytest.MonkeyPatch) -> str:
    """A world-readable host file under /etc the backend is made to believe holds the key
    (tests never write to the host's /etc). Set up before the server starts."""
    from jupyter_claude_pods.sandbox.local import backend as backend_module
    from jupyter_claude_pods.sandbox.local.bwrap import OWN_ETC

    victim = next(
        str(p)
        for p in sorted(Path("/etc").iterdir())
        if p.name not in OWN_ETC and p.is_file() and not p.is_symlink() and p.stat().st_size
        and p.stat().st_mode & 0o004
    )  # fmt: skip
    monkeypatch.setattr(backend_module, "key_holders", lambda *_args, **_kw: [victim])
    return victim


async def test_a_host_file_holding_the_key_is_empty_in_the_sandbox(
    key_holder: str, open_terminal: Any
) -> None:
    _name, term = await open_terminal()
    await term.expect("$ ")
    out = await run(term, f"wc -c < {key_holder}; wc -c < /run/host/etc/{key_holder[5:]}; echo ok")
    assert out.split() == ["0", "0", "ok"], out
