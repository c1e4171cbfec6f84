"""``claude-pods-launch`` with a stub ``claude`` that reports its argv and directory."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from jupyter_claude_pods.policy import CLAUDE_CODE_VERSION, LAUNCHER

from .sandbox import Run, bwrap_argv, require_bwrap, run

TOOLS = ["--tools", "Read,Glob,Grep"]
INSTALL_HINT = f"npm install -g @anthropic-ai/claude-code@{CLAUDE_CODE_VERSION}"
STUB = """#!{python}
import json, os, sys
print(json.dumps({{"argv": sys.argv[1:], "cwd": os.getcwd()}}))
"""


class Launch:
    """Runs the launcher with a clean environment (HOME, course dir, stub claude)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.course = root / "course"
        self.bin = root / "bin"
        for path in (self.home, self.course, self.bin):
            path.mkdir()
        self.stub = self.bin / "claude"
        self.stub.write_text(STUB.format(python=sys.executable))
        self.stub.chmod(0o755)
        self.env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.home),
            "CLAUDE_PODS_CLAUDE_BIN": str(self.stub),
            "CLAUDE_PODS_COURSE_DIR": str(self.course),
            "ANTHROPIC_AUTH_TOKEN": "session-token",
        }

    async def __call__(self, **env: str | None) -> Run:
        """Run it; a ``None`` value removes that variable."""
        merged = {**self.env, **env}
        clean = {k: v for k, v in merged.items() if v is not None}
        return await run([str(LAUNCHER)], clean, timeout=10, stdin=b"\n", cwd=self.root)


def reported(result: Run) -> dict[str, Any]:
    assert result.returncode == 0, result
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    return data


@pytest.fixture
def launch(tmp_path: Path) -> Launch:
    return Launch(tmp_path)


async def test_starts_claude_with_read_only_tools_in_the_course(launch: Launch) -> None:
    result = await launch()
    assert reported(result) == {"argv": TOOLS, "cwd": str(launch.course)}
    assert "no API key" not in result.stderr


@pytest.mark.parametrize("stage", ["3", "12", "007"])
async def test_stage_becomes_the_initial_prompt(launch: Launch, stage: str) -> None:
    result = await launch(CLAUDE_PODS_STAGE=stage)
    prompt = f"Resume the course at stage {stage}."
    assert reported(result)["argv"] == [*TOOLS, "--", prompt]
    assert "ignoring" not in result.stderr


@pytest.mark.parametrize(
    "stage",
    ["1; rm -rf /", "$(touch {marker})", "`touch {marker}`", "3a", "-1", " 3", "3\n4", "¹", "x"],
)
async def test_invalid_stage_is_ignored(launch: Launch, stage: str) -> None:
    marker = launch.root / "PWNED"
    result = await launch(CLAUDE_PODS_STAGE=stage.format(marker=marker))
    assert reported(result)["argv"] == TOOLS
    assert "ignoring CLAUDE_PODS_STAGE" in result.stderr
    assert not marker.exists()


async def test_empty_stage_is_no_stage(launch: Launch) -> None:
    result = await launch(CLAUDE_PODS_STAGE="")
    assert reported(result)["argv"] == TOOLS
    assert "ignoring" not in result.stderr


async def test_course_dir_defaults_to_home(launch: Launch) -> None:
    result = await launch(CLAUDE_PODS_COURSE_DIR=None)
    assert reported(result)["cwd"] == str(launch.home)


async def test_course_dir_with_awkward_name(launch: Launch) -> None:
    course = launch.root / "-n my course $(touch PWNED) *"
    course.mkdir()
    result = await launch(CLAUDE_PODS_COURSE_DIR=str(course))
    assert reported(result)["cwd"] == str(course)
    assert not (launch.root / "PWNED").exists()


async def test_missing_course_dir(launch: Launch) -> None:
    result = await launch(CLAUDE_PODS_COURSE_DIR=str(launch.root / "nope"))
    assert result.returncode == 1, result
    assert "course directory is missing" in result.stderr
    assert result.stdout == ""  # claude never started


async def test_claude_found_on_path(launch: Launch) -> None:
    result = await launch(CLAUDE_PODS_CLAUDE_BIN=None, PATH=f"{launch.bin}:/usr/bin:/bin")
    assert reported(result)["argv"] == TOOLS


async def test_claude_env_variable_may_be_a_bare_name(launch: Launch) -> None:
    result = await launch(CLAUDE_PODS_CLAUDE_BIN="claude", PATH=f"{launch.bin}:/usr/bin:/bin")
    assert reported(result)["argv"] == TOOLS


@pytest.mark.parametrize(
    "setting",
    [
        pytest.param({"CLAUDE_PODS_CLAUDE_BIN": "/nonexistent/claude"}, id="bad-path"),
        pytest.param({"CLAUDE_PODS_CLAUDE_BIN": None, "PATH": "{empty}"}, id="not-on-path"),
        pytest.param({"CLAUDE_PODS_CLAUDE_BIN": "{dir}"}, id="a-directory"),
    ],
)
async def test_missing_cli_explains_and_waits_for_enter(
    launch: Launch, setting: dict[str, str | None]
) -> None:
    empty = launch.root / "empty"
    empty.mkdir()
    env = {k: (v.format(empty=empty, dir=launch.bin) if v else v) for k, v in setting.items()}
    clean = {k: v for k, v in {**launch.env, **env}.items() if v is not None}
    proc = await asyncio.create_subprocess_exec(
        str(LAUNCHER),
        env=clean,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None
    assert proc.stderr is not None
    assert proc.stdout is not None
    try:
        message = await asyncio.wait_for(proc.stderr.readuntil(b"Press Enter"), 10)
        assert proc.returncode is None  # still waiting for the key press
        proc.stdin.write(b"\n")
        await proc.stdin.drain()
        rest = await asyncio.wait_for(proc.stderr.read(), 10)
        out = await asyncio.wait_for(proc.stdout.read(), 10)
        code = await asyncio.wait_for(proc.wait(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = (message + rest).decode()
    assert code == 127
    assert "Claude Code CLI is not installed" in text
    assert INSTALL_HINT in text
    assert out == b""


async def test_missing_cli_with_closed_stdin_still_exits(launch: Launch) -> None:
    result = await run(
        [str(LAUNCHER)], {**launch.env, "CLAUDE_PODS_CLAUDE_BIN": "/nope"}, timeout=10
    )
    assert result.returncode == 127
    assert INSTALL_HINT in result.stderr


@pytest.mark.parametrize("token", [None, ""])
async def test_no_token_explains_then_starts_claude(launch: Launch, token: str | None) -> None:
    result = await launch(ANTHROPIC_AUTH_TOKEN=token)
    assert reported(result)["argv"] == TOOLS
    assert "no API key is configured" in result.stderr
    assert "ANTHROPIC_API_KEY" in result.stderr


async def test_warns_when_the_policy_is_not_mounted(launch: Launch) -> None:
    if Path("/etc/claude-code/managed-settings.json").exists():
        pytest.skip("this host has a managed policy installed")
    result = await launch()
    assert "read-only policy is NOT enforced" in result.stderr
    assert reported(result)["argv"] == TOOLS


async def test_no_warning_inside_the_sandbox(launch: Launch) -> None:
    require_bwrap()
    argv = bwrap_argv(launch.root, launch.root, [str(LAUNCHER)], also=[sys.executable])
    result = await run(argv, launch.env, timeout=20, stdin=b"\n")
    assert reported(result) == {"argv": TOOLS, "cwd": str(launch.course)}
    assert result.stderr == ""


@pytest.mark.parametrize("shell", ["dash", "bash", "busybox"])
async def test_runs_under_posix_shells(launch: Launch, shell: str) -> None:
    path = shutil.which(shell)
    if path is None:
        pytest.skip(f"{shell} is not installed")
    argv = [path, "sh"] if shell == "busybox" else [path, "--posix"] if shell == "bash" else [path]
    result = await run(
        [*argv, str(LAUNCHER)],
        {**launch.env, "CLAUDE_PODS_STAGE": "4"},
        timeout=10,
        stdin=b"\n",
    )
    assert reported(result) == {
        "argv": [*TOOLS, "--", "Resume the course at stage 4."],
        "cwd": str(launch.course),
    }


# --- course tutor ---------------------------------------------------------------------

#: Shell syntax, printf directives, escapes and odd line structure: all must arrive as is.
TUTOR = (
    "-n # Tutor for $(touch {marker}) and `touch {marker}`\n"
    "Print %s and %d and \\n and \\c literally; ${{HOME}} $HOME ' \" *\n"
    "Unicode: é 日本語 ✓\n\n\n"
)
TUTOR_STUB = """#!{python}
import json, os, sys
print(json.dumps({{"argv": sys.argv[1:], "cwd": os.getcwd(),
                  "tutor_env": os.environ.get("CLAUDE_PODS_TUTOR")}}))
"""


@pytest.fixture
def tutor_launch(launch: Launch) -> Launch:
    """The launcher with a stub that also reports whether the tutor variable reached it."""
    launch.stub.write_text(TUTOR_STUB.format(python=sys.executable))
    return launch


async def test_tutor_is_written_verbatim_to_user_memory(tutor_launch: Launch) -> None:
    marker = tutor_launch.root / "PWNED"
    tutor = TUTOR.format(marker=marker)
    result = await tutor_launch(CLAUDE_PODS_TUTOR=tutor, CLAUDE_PODS_STAGE="2")
    memory = tutor_launch.home / ".claude" / "CLAUDE.md"
    assert memory.read_bytes() == tutor.encode()  # byte for byte, trailing newlines too
    assert not marker.exists()
    assert reported(result) == {
        "argv": [*TOOLS, "--", "Resume the course at stage 2."],
        "cwd": str(tutor_launch.course),
        "tutor_env": None,  # not passed on to claude and its children
    }
    assert "tutor" not in result.stderr


async def test_tutor_replaces_an_existing_memory_file(tutor_launch: Launch) -> None:
    (tutor_launch.home / ".claude").mkdir(mode=0o700)
    memory = tutor_launch.home / ".claude" / "CLAUDE.md"
    memory.write_text("an older, much longer tutor text\n" * 10)
    await tutor_launch(CLAUDE_PODS_TUTOR="short")
    assert memory.read_text() == "short"


@pytest.mark.parametrize("tutor", [None, ""])
async def test_no_tutor_writes_no_memory(tutor_launch: Launch, tutor: str | None) -> None:
    result = await tutor_launch(CLAUDE_PODS_TUTOR=tutor)
    assert reported(result)["argv"] == TOOLS
    assert not (tutor_launch.home / ".claude").exists()


async def test_unwritable_memory_warns_and_still_starts_claude(tutor_launch: Launch) -> None:
    (tutor_launch.home / ".claude").write_text("a file where a directory should be")
    result = await tutor_launch(CLAUDE_PODS_TUTOR="teach")
    assert reported(result)["argv"] == TOOLS
    assert "tutor instructions could not be written" in result.stderr


async def test_tutor_without_home_warns_and_still_starts_claude(tutor_launch: Launch) -> None:
    result = await tutor_launch(CLAUDE_PODS_TUTOR="teach", HOME=None)
    assert reported(result)["cwd"] == str(tutor_launch.course)
    assert "tutor instructions could not be written" in result.stderr


@pytest.mark.parametrize("shell", ["dash", "bash", "busybox"])
async def test_tutor_under_posix_shells(tutor_launch: Launch, shell: str) -> None:
    path = shutil.which(shell)
    if path is None:
        pytest.skip(f"{shell} is not installed")
    argv = [path, "sh"] if shell == "busybox" else [path, "--posix"] if shell == "bash" else [path]
    marker = tutor_launch.root / "PWNED"
    tutor = TUTOR.format(marker=marker) + "x" * 60_000  # near the 64 KiB cap
    result = await run(
        [*argv, str(LAUNCHER)],
        {**tutor_launch.env, "CLAUDE_PODS_TUTOR": tutor, "CLAUDE_PODS_STAGE": "1"},
        timeout=10,
        stdin=b"\n",
    )
    assert reported(result)["tutor_env"] is None
    assert (tutor_launch.home / ".claude" / "CLAUDE.md").read_bytes() == tutor.encode()
    assert not marker.exists()
