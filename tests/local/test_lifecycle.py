"""A local sandbox behaves as a terminal: progress, I/O, resize, reconnect, exit, cleanup."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from .conftest import SECRET_KEY, attach, pids_in_namespace, run


async def test_create_echo_resize_reconnect_delete(
    jp_fetch: Any, jp_ws_fetch: Any, open_terminal: Any, manager: Any, backend: Any
) -> None:
    name, term = await open_terminal()
    listed = json.loads((await jp_fetch("api", "terminals")).body)
    assert [m["name"] for m in listed] == [name]
    out = await term.expect("$ ")
    for line in ("starting a sandbox", "creating sandbox", "starting…", "attached"):
        assert line in out, out

    sandbox = manager.terminals[name].sandbox
    pid, pidns, session_dir = sandbox.extra["pid"], sandbox.extra["pidns"], sandbox.extra["dir"]
    assert Path(session_dir).is_dir()
    assert pids_in_namespace(pidns)

    term.stdin("echo $((6 * 7))\r")
    await term.expect("42")
    term.set_size(30, 100)
    assert (await run(term, "stty size")).split() == ["30", "100"]

    # Reconnect: a new socket replays recent output and drives the same sandbox.
    term.close()
    again = await attach(jp_ws_fetch, name)
    replay = await again.expect("30 100")
    assert "42" in replay
    assert "still-here" in await run(again, "echo still-$((1))-here; echo still-here")
    assert manager.terminals[name].sandbox is sandbox

    resp = await jp_fetch("api", "terminals", name, method="DELETE")
    assert resp.code == 204
    await again.expect_closed()
    assert again.disconnected
    await manager.wait_reaped()
    assert not Path(f"/proc/{pid}").exists()  # bwrap was reaped by us
    left = pids_in_namespace(pidns)
    assert left == [], [
        Path(f"/proc/{p}/status").read_text()[:300] for p in left
    ]  # nothing of the sandbox runs any more
    assert not Path(session_dir).exists()
    assert backend._sandboxes == {}


async def test_program_exit_ends_the_terminal(
    jp_fetch: Any, open_terminal: Any, manager: Any
) -> None:
    name, term = await open_terminal()
    await term.expect("$ ")
    sandbox = manager.terminals[name].sandbox
    term.stdin("exit 3\r")
    await term.expect_closed()
    assert term.disconnected
    assert json.loads((await jp_fetch("api", "terminals")).body) == []
    await manager.wait_reaped()
    assert pids_in_namespace(sandbox.extra["pidns"]) == []
    assert not Path(sandbox.extra["dir"]).exists()


async def test_exit_status_is_reported(open_terminal: Any, manager: Any) -> None:
    name, term = await open_terminal()
    await term.expect("$ ")
    terminal = manager.terminals[name]
    term.stdin("exit 7\r")
    await term.expect_closed()
    assert terminal.state == "exited"
    assert terminal.reason == "exit status 7"


async def foreground(sandbox: Any, command: str, timeout: float = 10.0) -> None:
    """Wait until *command* holds the sandbox terminal's foreground.

    Keystrokes such as ^C act on whoever is in the foreground when they arrive, and
    nothing the terminal prints tells when the shell has handed it over; the kernel does.
    """
    master = sandbox.extra["process"].master
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        with contextlib.suppress(OSError):
            group = os.tcgetpgrp(master)
            if Path(f"/proc/{group}/comm").read_text().strip() == command:
                return
        if loop.time() > deadline:
            raise AssertionError(f"{command} never got the terminal's foreground")
        await asyncio.sleep(0.01)


async def test_ctrl_c_interrupts_and_job_control_works(open_terminal: Any, manager: Any) -> None:
    name, term = await open_terminal()
    out = await term.expect("$ ")
    assert "no job control" not in out
    sandbox = manager.terminals[name].sandbox
    term.stdin("echo sleeping-$((1 + 1)); sleep 60; echo after-sleep-$((1 + 1))\r")
    await term.expect("sleeping-2")
    await foreground(sandbox, "sleep")
    loop = asyncio.get_running_loop()
    began = loop.time()
    term.stdin("\x03")
    # ^C kills the running sleep and the rest of the line; the shell prompts again.
    await term.expect(lambda o: "$ " in o.split("sleeping-2", 1)[-1], timeout=10)
    assert loop.time() - began < 10
    assert "interrupted" in await run(term, "echo interrupted")
    assert "after-sleep-2" not in term.output
    # Job control: a background job is listed, brought back to the foreground, ^C'd.
    out = await run(term, "sleep 30 & jobs")
    assert "Running" in out, out
    term.stdin("fg\r")
    await foreground(sandbox, "sleep")
    term.stdin("\x03")
    assert "back" in await run(term, "echo back", timeout=10)


async def test_killed_sandbox_is_reported(open_terminal: Any, manager: Any) -> None:
    name, term = await open_terminal()
    await term.expect("$ ")
    sandbox = manager.terminals[name].sandbox
    os.kill(sandbox.extra["pid"], 9)
    out = await term.expect("open a new one to retry")
    assert "the sandbox was killed (SIGKILL)" in out
    assert manager.terminals[name].state == "failed"
    await manager.wait_reaped()
    assert pids_in_namespace(sandbox.extra["pidns"]) == []


async def test_output_is_complete_and_utf8_safe(open_terminal: Any) -> None:
    _name, term = await open_terminal()
    await term.expect("$ ")
    out = await run(term, "seq 1 30000; for i in $(seq 1 500); do printf 'é€😀'; done; echo")
    numbers = [line.strip("\r") for line in out.split("\n") if line.strip("\r").isdigit()]
    assert numbers == [str(i) for i in range(1, 30001)]
    assert out.count("é€😀") == 500
    assert "\ufffd" not in term.output


async def test_server_stop_kills_every_sandbox(
    jp_serverapp: Any, open_terminal: Any, manager: Any, backend: Any, state_dir: Path
) -> None:
    sandboxes = []
    for _ in range(3):
        name, term = await open_terminal()
        await term.expect("$ ")
        sandboxes.append(manager.terminals[name].sandbox)
    assert all(pids_in_namespace(s.extra["pidns"]) for s in sandboxes)
    run_dir = backend._layout.run_dir
    await jp_serverapp.extension_manager.stop_all_extensions()
    for sandbox in sandboxes:
        assert not Path(f"/proc/{sandbox.extra['pid']}").exists()
        assert pids_in_namespace(sandbox.extra["pidns"]) == []
    assert not run_dir.exists()  # homes, /tmp, proxy socket and database: all gone
    assert list((state_dir / "state").iterdir()) == []


@pytest.mark.parametrize(
    "extra_config",
    [{"SandboxTerminalManager": {"max_sandboxes_per_user": 2}}],
)
async def test_caps_apply(jp_fetch: Any, open_terminal: Any) -> None:
    for _ in range(2):
        _name, term = await open_terminal()
        await term.expect("$ ")
    with pytest.raises(Exception) as caught:
        await jp_fetch("api", "terminals", method="POST", body="{}")
    assert getattr(caught.value, "code", None) == 429


async def test_real_key_is_not_in_server_logs(open_terminal: Any, server_log: Any) -> None:
    _name, term = await open_terminal()
    await term.expect("$ ")
    await run(term, "true")
    text = "\n".join(server_log.lines)
    assert "started sandbox-" in text  # the capture works
    assert SECRET_KEY not in text
