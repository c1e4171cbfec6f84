"""The whole policy end to end, as a terminal runs it: the launcher starts the real CLI
interactively (on a pseudo-terminal, inside bubblewrap, offline but for the fake API).

With the seeded ``~/.claude.json`` and ``ANTHROPIC_AUTH_TOKEN`` nothing may stop at a
dialog (onboarding, workspace trust, API-key approval): the stage prompt must reach the
API without a single key press, offering the model exactly Read, Glob and Grep.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import pty
import re
import struct
import termios
from pathlib import Path
from typing import Any

import pytest

from jupyter_claude_pods.policy import LAUNCHER, seed_home
from tests.fakes.anthropic_api import FakeAnthropicAPI, Recorded

from .sandbox import Workspace, bwrap_argv, cli_env
from .test_cli_policy import hooks

pytestmark = pytest.mark.usefixtures("bwrap")

PROMPT = "Resume the course at stage 3."
ANSI = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]")


def main_request_with_prompt(rec: Recorded) -> bool:
    if rec.method != "POST" or rec.path != "/v1/messages":
        return False
    body: dict[str, Any] = rec.json
    return bool(body.get("tools")) and PROMPT in json.dumps(body["messages"])


@pytest.mark.parametrize("course_is_symlink", [False, True], ids=["course", "symlinked-course"])
async def test_launcher_goes_straight_to_the_stage_prompt(
    claude: str, ws: Workspace, fake_api: FakeAnthropicAPI, course_is_symlink: bool
) -> None:
    course = ws.course
    if course_is_symlink:  # the CLI looks trust up by the real path
        course = ws.root / "course-link"
        course.symlink_to(ws.course)
        seed_home(ws.home, str(course))
    # A user's hooks and status-line command must not run either.
    status_line = {"type": "command", "command": f"touch {ws.marker}"}
    ws.write_json("home/.claude/settings.json", {**hooks(ws.marker), "statusLine": status_line})
    env = cli_env(
        ws.home,
        fake_api,
        CLAUDE_PODS_CLAUDE_BIN=claude,
        CLAUDE_PODS_COURSE_DIR=str(course),
        CLAUDE_PODS_STAGE="3",
    )
    argv = bwrap_argv(ws.root, ws.root, [str(LAUNCHER)], also=[claude])

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    screen = bytearray()
    loop = asyncio.get_running_loop()

    def on_output() -> None:
        try:
            data = os.read(master, 1 << 16)
        except OSError:
            data = b""
        if data:
            screen.extend(data)
        else:
            loop.remove_reader(master)

    loop.add_reader(master, on_output)
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True
    )
    os.close(slave)
    try:
        await fake_api.wait_for(
            lambda: any(main_request_with_prompt(r) for r in fake_api.requests), timeout=20
        )
    except asyncio.TimeoutError:
        text = ANSI.sub(b"", bytes(screen)).decode(errors="replace")
        pytest.fail(f"the stage prompt never reached the API; the terminal showed:\n{text}")
    finally:
        loop.remove_reader(master)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()  # bwrap --die-with-parent takes the CLI with it
        await asyncio.wait_for(proc.wait(), 10)
        os.close(master)

    (main,) = [r.json for r in fake_api.requests if main_request_with_prompt(r)]
    assert {tool["name"] for tool in main["tools"]} == {"Read", "Glob", "Grep"}
    posts = [r for r in fake_api.requests if r.method == "POST"]
    assert {r.header("authorization") for r in posts} == {f"Bearer {env['ANTHROPIC_AUTH_TOKEN']}"}
    # The UI moves the cursor instead of printing spaces: compare without whitespace.
    text = ANSI.sub(b"", bytes(screen)).decode(errors="replace")
    squeezed = "".join(text.split())
    for dialog in ("trust this folder", "use this API key", "Unable to connect", "claude-pods:"):
        assert "".join(dialog.split()) not in squeezed, text
    assert "don'taskon" in squeezed, text  # the managed defaultMode is in force
    assert not ws.marker.exists(), "a hook or the status line ran"
    assert not Path(ws.course, ".claude", "settings.local.json").exists()
