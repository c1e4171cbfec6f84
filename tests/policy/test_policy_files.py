"""The policy files and the Python API, without running the CLI.

Each rule of the issue is its own assertion, so a broken rule names itself.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from jupyter_claude_pods import policy
from jupyter_claude_pods.policy import (
    CLAUDE_CODE_VERSION,
    LAUNCHER,
    POLICY_DIR,
    claude_json,
    find_claude,
    sandbox_env,
    seed_home,
)

MUST_DENY = [
    "Bash",
    "PowerShell",
    "Monitor",
    "Edit",
    "Write",
    "NotebookEdit",
    "WebFetch",
    "WebSearch",
    "Agent",
    "Skill",
    "Workflow",
    "mcp__*",
]
TRAFFIC_SWITCHES = [
    "DISABLE_TELEMETRY",
    "DISABLE_ERROR_REPORTING",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
    "DISABLE_AUTOUPDATER",
    "DISABLE_UPDATES",
    "CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL",
]


@pytest.fixture(scope="module")
def settings() -> dict[str, Any]:
    data = json.loads((POLICY_DIR / "managed-settings.json").read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def permissions(settings: dict[str, Any]) -> dict[str, Any]:
    value = settings["permissions"]
    assert isinstance(value, dict)
    return value


# ------------------------------------------------------------------ managed-settings.json


def test_allow_is_exactly_read_glob_grep(permissions: dict[str, Any]) -> None:
    assert sorted(permissions["allow"]) == ["Glob", "Grep", "Read"]


@pytest.mark.parametrize("tool", MUST_DENY)
def test_tool_is_denied(permissions: dict[str, Any], tool: str) -> None:
    assert tool in permissions["deny"]


def test_deny_rules_are_bare_tool_names(permissions: dict[str, Any]) -> None:
    # A bare name removes the tool; a scoped rule like Bash(rm *) would leave it usable.
    deny = permissions["deny"]
    assert all("(" not in rule for rule in deny)
    assert len(deny) == len(set(deny))
    assert not set(deny) & {"Read", "Glob", "Grep", "*"}  # deny beats allow


def test_nothing_is_left_to_ask(permissions: dict[str, Any]) -> None:
    assert permissions.get("ask", []) == []
    assert "additionalDirectories" not in permissions


def test_default_mode_cannot_prompt(permissions: dict[str, Any]) -> None:
    assert permissions["defaultMode"] == "dontAsk"


def test_bypass_mode_disabled(permissions: dict[str, Any]) -> None:
    assert permissions["disableBypassPermissionsMode"] == "disable"


def test_auto_mode_disabled(permissions: dict[str, Any]) -> None:
    assert permissions["disableAutoMode"] == "disable"


def test_only_managed_permission_rules(settings: dict[str, Any]) -> None:
    assert settings["allowManagedPermissionRulesOnly"] is True


def test_only_managed_hooks(settings: dict[str, Any]) -> None:
    assert settings["allowManagedHooksOnly"] is True


def test_no_hooks_or_status_line_at_all(settings: dict[str, Any]) -> None:
    assert settings["disableAllHooks"] is True
    assert "hooks" not in settings
    assert "statusLine" not in settings


def test_sideload_flags_off(settings: dict[str, Any]) -> None:
    assert settings["disableSideloadFlags"] is True


def test_marketplaces_off(settings: dict[str, Any]) -> None:
    assert settings["strictKnownMarketplaces"] == []


def test_no_mcp_server_allowed(settings: dict[str, Any]) -> None:
    assert settings["allowedMcpServers"] == []
    assert settings["allowManagedMcpServersOnly"] is True


def test_skill_shell_execution_off(settings: dict[str, Any]) -> None:
    assert settings["disableSkillShellExecution"] is True


def test_remote_control_and_agent_view_off(settings: dict[str, Any]) -> None:
    assert settings["disableRemoteControl"] is True
    assert settings["disableAgentView"] is True


def test_webfetch_preflight_skipped(settings: dict[str, Any]) -> None:
    assert settings["skipWebFetchPreflight"] is True


def test_cli_version_pinned(settings: dict[str, Any]) -> None:
    assert settings["requiredMinimumVersion"] == CLAUDE_CODE_VERSION
    assert settings["requiredMaximumVersion"] == CLAUDE_CODE_VERSION


@pytest.mark.parametrize("name", TRAFFIC_SWITCHES)
def test_managed_env_switch(settings: dict[str, Any], name: str) -> None:
    assert settings["env"][name] == "1"


def test_managed_env_holds_no_endpoint_or_credential(settings: dict[str, Any]) -> None:
    assert not [k for k in settings["env"] if k.startswith("ANTHROPIC_")]
    for key in ("apiKeyHelper", "forceLoginMethod", "forceLoginOrgUUID"):
        assert key not in settings


def test_policy_dir_has_no_drop_ins() -> None:
    # The CLI would merge managed-settings.d/*.json into the policy.
    assert not (POLICY_DIR / "managed-settings.d").exists()


# ------------------------------------------------------------------ managed-mcp.json


def test_managed_mcp_is_empty() -> None:
    assert json.loads((POLICY_DIR / "managed-mcp.json").read_text()) == {"mcpServers": {}}


# ------------------------------------------------------------------ the launcher file


def test_launcher_is_executable_posix_sh() -> None:
    assert LAUNCHER.parent == POLICY_DIR
    assert LAUNCHER.stat().st_mode & stat.S_IXUSR
    lines = LAUNCHER.read_text().splitlines()
    assert lines[0] == "#!/bin/sh"
    assert "set -eu" in lines


def test_launcher_names_the_pinned_version() -> None:
    assert f"\nCLAUDE_CODE_VERSION={CLAUDE_CODE_VERSION}\n" in LAUNCHER.read_text()


# ------------------------------------------------------------------ claude_json, seed_home


def test_claude_json_skips_onboarding_and_trusts_the_course() -> None:
    data = claude_json("/home/jovyan/course/")
    assert data["hasCompletedOnboarding"] is True
    assert data["lastReleaseNotesSeen"] == CLAUDE_CODE_VERSION
    project = data["projects"]["/home/jovyan/course"]  # normalised: no trailing slash
    assert project["hasTrustDialogAccepted"] is True
    assert project["hasCompletedProjectOnboarding"] is True
    assert "customApiKeyResponses" not in data  # AUTH_TOKEN needs no approval


def test_claude_json_trusts_the_real_path_of_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    projects = claude_json(str(tmp_path / "link"))["projects"]
    assert set(projects) == {str(tmp_path / "link"), str(tmp_path / "real")}
    assert all(p["hasTrustDialogAccepted"] is True for p in projects.values())


def test_seed_home_modes_and_content(tmp_path: Path) -> None:
    home = tmp_path / "home"
    seed_home(home, "/course")
    config = home / ".claude.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE((home / ".claude").stat().st_mode) == 0o700
    assert json.loads(config.read_text()) == claude_json("/course")
    assert sorted(p.name for p in home.iterdir()) == [".claude", ".claude.json"]


def test_seed_home_keeps_existing_state(tmp_path: Path) -> None:
    (tmp_path / ".claude").mkdir(mode=0o755)
    existing = {
        "numStartups": 7,
        "hasCompletedOnboarding": False,
        "projects": {
            "/other": {"x": 1},
            "/course": {"lastCost": 2, "hasTrustDialogAccepted": False},
        },
    }
    (tmp_path / ".claude.json").write_text(json.dumps(existing))
    seed_home(tmp_path, "/course")
    data = json.loads((tmp_path / ".claude.json").read_text())
    assert data["numStartups"] == 7
    assert data["hasCompletedOnboarding"] is True
    assert data["projects"]["/other"] == {"x": 1}
    assert data["projects"]["/course"]["lastCost"] == 2
    assert data["projects"]["/course"]["hasTrustDialogAccepted"] is True
    assert stat.S_IMODE((tmp_path / ".claude").stat().st_mode) == 0o700


def test_seed_home_replaces_garbage(tmp_path: Path) -> None:
    (tmp_path / ".claude.json").write_text("{not json")
    seed_home(tmp_path, "/course")
    assert json.loads((tmp_path / ".claude.json").read_text()) == claude_json("/course")


def test_seed_home_does_not_write_through_a_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".claude.json").symlink_to(victim)
    seed_home(home, "/course")
    assert victim.read_text() == "precious"
    assert not (home / ".claude.json").is_symlink()
    assert stat.S_IMODE((home / ".claude.json").stat().st_mode) == 0o600


# ------------------------------------------------------------------ find_claude


def make_exe(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_find_claude_prefers_the_env_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exe = make_exe(tmp_path / "bin" / "my-claude")
    make_exe(tmp_path / "path" / "claude")
    monkeypatch.setenv("PATH", str(tmp_path / "path"))
    monkeypatch.setenv("CLAUDE_PODS_CLAUDE_BIN", str(exe))
    assert find_claude() == str(exe)


def test_find_claude_env_variable_not_executable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "claude").write_text("")
    make_exe(tmp_path / "path" / "claude")
    monkeypatch.setenv("PATH", str(tmp_path / "path"))
    monkeypatch.setenv("CLAUDE_PODS_CLAUDE_BIN", str(tmp_path / "claude"))
    assert find_claude() is None


def test_find_claude_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exe = make_exe(tmp_path / "path" / "claude")
    monkeypatch.delenv("CLAUDE_PODS_CLAUDE_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "path"))
    assert find_claude() == str(exe)


def test_find_claude_checkout_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLAUDE_PODS_CLAUDE_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    checkout = tmp_path / "checkout"
    (checkout / "pyproject.toml").parent.mkdir()
    (checkout / "pyproject.toml").write_text("")
    fake = checkout / ".cache" / "npm" / "node_modules" / ".bin" / "claude"
    monkeypatch.setattr(policy, "_CHECKOUT", checkout)
    monkeypatch.setattr(policy, "_CHECKOUT_CLAUDE", fake)
    assert find_claude() is None
    make_exe(fake)
    assert find_claude() == str(fake)


def test_this_checkout_is_where_npm_installs() -> None:
    assert (policy._CHECKOUT / "pyproject.toml").is_file()
    assert policy._CHECKOUT_CLAUDE == policy._CHECKOUT / ".cache/npm/node_modules/.bin/claude"


# ------------------------------------------------------------------ sandbox_env


@pytest.mark.parametrize("name", TRAFFIC_SWITCHES)
def test_sandbox_env_switch(name: str) -> None:
    assert sandbox_env()[name] == "1"


def test_sandbox_env_terminal() -> None:
    assert sandbox_env()["TERM"] == "xterm-256color"


def test_sandbox_env_matches_managed_env(settings: dict[str, Any]) -> None:
    env = sandbox_env()
    assert {k: v for k, v in env.items() if k != "TERM"} == settings["env"]


def test_sandbox_env_holds_nothing_secret_or_dangerous() -> None:
    env = sandbox_env()
    assert not [k for k in env if k.startswith("ANTHROPIC_")]
    assert "IS_SANDBOX" not in env  # would let root use --dangerously-skip-permissions
    assert "CLAUDE_CODE_MAX_RETRIES" not in env
    assert env is not sandbox_env()  # a fresh dict each time
    assert all(isinstance(v, str) for v in env.values())
