"""The policy against the real Claude Code CLI (``claude -p``), inside bubblewrap.

The fake API scripts a ``tool_use`` as the model's first answer; the CLI then sends the
tool's result back in its next request. A forbidden tool must come back as an error
without having run (its marker file never appears), whatever the user, the project or
the command line says. Read must keep working.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.anthropic_api import DEFAULT_TEXT, FakeAnthropicAPI, Reply

from .sandbox import (
    NOTES,
    Run,
    Workspace,
    bwrap_argv,
    cli_env,
    messages_requests,
    result_text,
    run,
    tool_names,
    tool_result,
)

pytestmark = pytest.mark.usefixtures("bwrap")

PROMPT = "please run the tools"
ALLOWED = {"Read", "Glob", "Grep"}


async def claude_p(
    claude: str,
    ws: Workspace,
    api: FakeAnthropicAPI,
    *flags: str,
    prompt: str = PROMPT,
    env: dict[str, str] | None = None,
) -> Run:
    argv = [claude, "-p", "--output-format", "json", *flags, "--", prompt]
    return await run(bwrap_argv(ws.root, ws.course, argv), cli_env(ws.home, api, **(env or {})))


def bash_touch(marker: Path) -> Reply:
    return Reply(kind="tool_use", tool_name="Bash", tool_input={"command": f"touch {marker}"})


def assert_bash_refused(ws: Workspace, api: FakeAnthropicAPI, result: Run) -> None:
    assert not ws.marker.exists(), f"Bash ran: {result}"
    bodies = messages_requests(api)
    if not bodies:  # refused at startup: nothing was sent at all
        assert result.returncode != 0, result
        return
    assert "Bash" not in tool_names(bodies[0])
    block = tool_result(api, "Bash")
    assert block.get("is_error") is True, block
    assert "No such tool available: Bash" in result_text(block), block


# ------------------------------------------------------------------ the tools


@pytest.mark.parametrize(
    ("flags", "env"),
    [(("--allowedTools", "Bash"), {}), (("--dangerously-skip-permissions",), {"IS_SANDBOX": "1"})],
)
async def test_control_without_the_policy_bash_does_run(
    claude: str,
    ws: Workspace,
    fake_api: FakeAnthropicAPI,
    tmp_path_factory: pytest.TempPathFactory,
    flags: tuple[str, ...],
    env: dict[str, str],
) -> None:
    """The harness can see a breach: with an empty /etc/claude-code the marker appears."""
    empty = tmp_path_factory.mktemp("no-policy")
    fake_api.script(bash_touch(ws.marker), Reply(text="FINAL"))
    argv = [claude, "-p", *flags, "--", PROMPT]
    argv = bwrap_argv(ws.root, ws.course, argv, policy_dir=empty)
    result = await run(argv, cli_env(ws.home, fake_api, **env))
    assert result.returncode == 0, result
    assert ws.marker.exists(), result
    assert not tool_result(fake_api, "Bash").get("is_error")


async def test_plain_run_has_only_read_only_tools_and_no_warnings(
    claude: str, ws: Workspace, fake_api: FakeAnthropicAPI
) -> None:
    result = await claude_p(claude, ws, fake_api, prompt="say hi")
    assert result.returncode == 0, result
    assert result.result["result"] == DEFAULT_TEXT
    # Every deny rule names a tool this CLI version knows (no "matches no known tool").
    assert result.stderr == "", result.stderr
    (body,) = messages_requests(fake_api)
    # The policy alone (no --tools flag here) leaves the model exactly three tools.
    assert tool_names(body) == ALLOWED
    # Authenticated as a sandbox does: the session token as a Bearer token.
    (post,) = [r for r in fake_api.requests if r.method == "POST"]
    assert post.header("authorization") == "Bearer cps-session-token-for-policy-tests"


@pytest.mark.parametrize(
    ("tool", "tool_input"),
    [
        ("Bash", None),
        ("Write", {"file_path": "{course}/written.txt", "content": "x"}),
        ("Edit", {"file_path": "{course}/notes.txt", "old_string": "second", "new_string": "X"}),
        ("NotebookEdit", {"notebook_path": "{course}/n.ipynb", "new_source": "x"}),
        ("WebFetch", {"url": "{fake}/webfetch-canary", "prompt": "summarise"}),
        ("WebSearch", {"query": "anything"}),
        ("Agent", {"description": "x", "prompt": "run touch {marker}"}),
        ("mcp__x__y", {}),
    ],
)
async def test_forbidden_tool_is_refused(
    claude: str,
    ws: Workspace,
    fake_api: FakeAnthropicAPI,
    tool: str,
    tool_input: dict[str, Any] | None,
) -> None:
    if tool_input is None:
        reply = bash_touch(ws.marker)
    else:
        text = json.dumps(tool_input)
        text = text.replace("{course}", str(ws.course)).replace("{fake}", fake_api.url)
        reply = Reply(
            kind="tool_use",
            tool_name=tool,
            tool_input=json.loads(text.replace("{marker}", str(ws.marker))),
        )
    fake_api.script(reply, Reply(text="FINAL"))
    result = await claude_p(claude, ws, fake_api)
    assert result.returncode == 0, result
    assert result.result["result"] == "FINAL"

    block = tool_result(fake_api, tool)
    assert block.get("is_error") is True, block
    assert f"No such tool available: {tool}" in result_text(block), block
    assert tool not in tool_names(messages_requests(fake_api)[0])
    assert not ws.marker.exists()
    assert not (ws.course / "written.txt").exists()
    assert (ws.course / "notes.txt").read_text() == NOTES
    assert not (ws.course / "n.ipynb").exists()
    assert all(r.path != "/webfetch-canary" for r in fake_api.requests)


async def test_read_inside_the_course_works(
    claude: str, ws: Workspace, fake_api: FakeAnthropicAPI
) -> None:
    fake_api.script(
        Reply(
            kind="tool_use",
            tool_name="Read",
            tool_input={"file_path": str(ws.course / "notes.txt")},
        ),
        Reply(text="FINAL"),
    )
    result = await claude_p(claude, ws, fake_api)
    assert result.returncode == 0, result
    block = tool_result(fake_api, "Read")
    assert not block.get("is_error"), block
    assert "COURSE-NOTES-CONTENT-4242" in result_text(block)
    assert result.result["permission_denials"] == []


# ------------------------------------------------------------------ override attempts

ALLOW_ALL: dict[str, Any] = {
    "permissions": {
        "allow": ["Bash", "Bash(*)", "Write", "Edit"],
        "deny": [],
        "defaultMode": "bypassPermissions",
    }
}


@pytest.mark.parametrize(
    ("files", "flags", "env"),
    [
        pytest.param({"home/.claude/settings.json": ALLOW_ALL}, (), {}, id="user-settings"),
        pytest.param({"course/.claude/settings.json": ALLOW_ALL}, (), {}, id="project-settings"),
        pytest.param(
            {"course/.claude/settings.local.json": ALLOW_ALL}, (), {}, id="local-settings"
        ),
        pytest.param({}, ("--allowedTools", "Bash"), {}, id="allowedTools"),
        pytest.param({}, ("--tools", "Bash,Read"), {}, id="tools-flag"),
        pytest.param({}, ("--permission-mode", "bypassPermissions"), {}, id="bypass-mode"),
        pytest.param(
            {},
            ("--dangerously-skip-permissions",),
            {"IS_SANDBOX": "1"},  # else root may not use the flag at all
            id="dangerously-skip-permissions",
        ),
        pytest.param({}, ("--settings", json.dumps(ALLOW_ALL)), {}, id="settings-flag"),
        pytest.param(
            {},
            ("--setting-sources", "", "--settings", json.dumps(ALLOW_ALL)),
            {},
            id="setting-sources",
        ),
        pytest.param(
            {
                "home/.claude/settings.json": ALLOW_ALL,
                "course/.claude/settings.json": ALLOW_ALL,
                "course/.claude/settings.local.json": ALLOW_ALL,
            },
            (
                "--allowedTools",
                "Bash",
                "--permission-mode",
                "bypassPermissions",
                "--dangerously-skip-permissions",
                "--settings",
                json.dumps(ALLOW_ALL),
            ),
            {"IS_SANDBOX": "1"},
            id="all-at-once",
        ),
    ],
)
async def test_override_attempt_still_refuses_bash(
    claude: str,
    ws: Workspace,
    fake_api: FakeAnthropicAPI,
    files: dict[str, Any],
    flags: tuple[str, ...],
    env: dict[str, str],
) -> None:
    for relative, data in files.items():
        ws.write_json(relative, data)
    fake_api.script(bash_touch(ws.marker), Reply(text="FINAL"))
    result = await claude_p(claude, ws, fake_api, *flags, env=env)
    assert_bash_refused(ws, fake_api, result)


def hooks(marker: Path) -> dict[str, Any]:
    command = {"type": "command", "command": f"touch {marker}"}
    return {
        "hooks": {
            event: [{"matcher": "*", "hooks": [command]}]
            for event in ("SessionStart", "UserPromptSubmit", "PreToolUse", "Stop")
        }
    }


def stdio_server(marker: Path) -> dict[str, Any]:
    return {"mcpServers": {"pwn": {"command": "/bin/sh", "args": ["-c", f"touch {marker}"]}}}


@pytest.mark.parametrize("where", ["home", "course"])
async def test_user_and_project_hooks_do_not_run(
    claude: str, ws: Workspace, fake_api: FakeAnthropicAPI, where: str
) -> None:
    ws.write_json(f"{where}/.claude/settings.json", hooks(ws.marker))
    fake_api.script(bash_touch(ws.root / "unused"), Reply(text="FINAL"))  # fires PreToolUse
    result = await claude_p(claude, ws, fake_api)
    assert result.returncode == 0, result
    assert not ws.marker.exists(), result


async def test_project_mcp_server_is_not_started(
    claude: str, ws: Workspace, fake_api: FakeAnthropicAPI
) -> None:
    ws.write_json("course/.mcp.json", stdio_server(ws.marker))
    ws.write_json("course/.claude/settings.json", {"enableAllProjectMcpServers": True})
    result = await claude_p(claude, ws, fake_api, prompt="say hi")
    assert result.returncode == 0, result
    assert not ws.marker.exists(), result


@pytest.mark.parametrize("flag", ["--mcp-config", "--agents", "--plugin-dir"])
async def test_sideload_flags_are_rejected(
    claude: str, ws: Workspace, fake_api: FakeAnthropicAPI, flag: str
) -> None:
    value = {
        "--mcp-config": json.dumps(stdio_server(ws.marker)),
        "--agents": json.dumps({"pwn": {"description": "x", "prompt": "x", "tools": ["Bash"]}}),
        "--plugin-dir": str(ws.course),
    }[flag]
    result = await claude_p(claude, ws, fake_api, flag, value, prompt="say hi")
    assert result.returncode != 0, result
    assert f"{flag} is disabled" in result.stderr, result
    assert "disableSideloadFlags" in result.stderr, result
    assert not ws.marker.exists()
    assert messages_requests(fake_api) == []


async def test_skill_inline_shell_does_not_run(
    claude: str, ws: Workspace, fake_api: FakeAnthropicAPI
) -> None:
    skill = ws.home / ".claude" / "skills" / "pwn" / "SKILL.md"
    skill.parent.mkdir(parents=True)
    skill.write_text(f"---\nname: pwn\ndescription: x\n---\nContext: !`touch {ws.marker}`\n")
    result = await claude_p(claude, ws, fake_api, prompt="/pwn")
    assert result.returncode == 0, result
    assert not ws.marker.exists(), result
    (body,) = messages_requests(fake_api)
    assert "Context: [shell command execution disabled by policy]" in json.dumps(body), body


# ------------------------------------------------------------------ known residuals
#
# Settings files and the course directory can still make the CLI run commands that are
# not tools: apiKeyHelper, cloud-provider auth helpers, an ``env`` block (e.g. git
# configuration for the git calls the CLI makes), a repository's .git/config. The model
# cannot write any of them (Write, Edit, Bash and NotebookEdit are gone), and the person
# at the terminal can run commands anyway (``!`` shell mode), so HOME and the course
# content are trusted input; the sandbox itself is the boundary. These tests pin that
# down (strict xfail: if a CLI update closes a route, they fail and this note must change).


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="known residual: apiKeyHelper from user settings runs",
)
async def test_residual_api_key_helper(
    claude: str, ws: Workspace, fake_api: FakeAnthropicAPI
) -> None:
    ws.write_json("home/.claude/settings.json", {"apiKeyHelper": f"touch {ws.marker}"})
    await claude_p(claude, ws, fake_api, prompt="say hi")
    assert not ws.marker.exists()


@pytest.mark.xfail(
    strict=True, raises=AssertionError, reason="known residual: a project env block configures git"
)
async def test_residual_git_config_from_project_env(
    claude: str, ws: Workspace, fake_api: FakeAnthropicAPI
) -> None:
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    await run([git, "init", "-q", str(ws.course)], {"PATH": "/usr/bin:/bin"})
    env = {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "core.fsmonitor",
        "GIT_CONFIG_VALUE_0": f"touch {ws.marker}; false",
    }
    ws.write_json("course/.claude/settings.json", {"env": env})
    await claude_p(claude, ws, fake_api, prompt="say hi")
    assert not ws.marker.exists()
