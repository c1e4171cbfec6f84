"""The bubblewrap command line, as the pure function builds it."""

from __future__ import annotations

from typing import Any

import pytest

from jupyter_claude_pods.sandbox.local.bwrap import (
    FORWARDER,
    PROXY_SOCKET,
    BwrapOptions,
    HostEntry,
    bwrap_argv,
    bwrap_parts,
    etc_files,
    sandbox_env,
)
from jupyter_claude_pods.sandbox.spec import SandboxSpec

KEY = "sk-ant-api03-REAL-KEY-0123456789"
SPEC = SandboxSpec(
    session_id="0badcafe", user="alice", terminal="1", env={"ANTHROPIC_AUTH_TOKEN": "cpp1.x.y"}
)


def options(**overrides: Any) -> BwrapOptions:
    values: dict[str, Any] = {
        "bwrap": "/usr/bin/bwrap",
        "command": ("/run/claude-pods/bin/claude-pods-launch",),
        "home_source": "/state/s/home",
        "tmp_source": "/state/s/tmp",
        "system": (HostEntry("/usr"), HostEntry("/bin", "usr/bin")),
        "etc": (
            HostEntry("/etc/hosts"),
            HostEntry("/etc/ld.so.cache"),
            HostEntry("/etc/localtime", "/usr/share/zoneinfo/UTC"),
            HostEntry("/etc/passwd"),
            HostEntry("/etc/claude-code"),
        ),
        "files": {"/etc/passwd": 7},
        "policy_dir": "/pkg/policy",
        "proxy_socket": "/state/sock/proxy.sock",
        "forwarder": "/pkg/forwarder.py",
        "ready_fd": 9,
        "info_fd": 8,
        "launcher": "/pkg/policy/claude-pods-launch",
        "claude_source": "/opt/claude/claude.exe",
        "claude_path": "/run/claude-pods/claude",
        "policy_env": {"DISABLE_TELEMETRY": "1", "TERM": "xterm-256color"},
        "extra_env": {"EDITOR": "vi"},
        "secrets": (KEY,),
    }
    values.update(overrides)
    return BwrapOptions(**values)


def pairs(argv: list[str], flag: str, arity: int) -> list[tuple[str, ...]]:
    return [tuple(argv[i + 1 : i + 1 + arity]) for i, a in enumerate(argv) if a == flag]


def test_namespaces_user_and_capabilities() -> None:
    argv = bwrap_argv(SPEC, options())
    head = argv[: argv.index("--setenv")]
    for flag in ("--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent"):
        assert flag in head
    assert pairs(argv, "--uid", 1) == [("1000",)]
    assert pairs(argv, "--gid", 1) == [("1000",)]
    assert pairs(argv, "--cap-drop", 1) == [("ALL",)]
    assert pairs(argv, "--hostname", 1) == [("sandbox",)]
    assert "--share-net" not in argv
    assert "--new-session" not in argv  # it breaks job control and ^C (see the docstring)
    assert "--clearenv" in argv


def test_filesystem_layout() -> None:
    argv = bwrap_argv(SPEC, options(course_source="/srv/course"))
    ro = pairs(argv, "--ro-bind", 2)
    rw = pairs(argv, "--bind", 2)
    assert ("/usr", "/usr") in ro
    assert ("/bin", "/bin") not in ro
    assert ("usr/bin", "/bin") in pairs(argv, "--symlink", 2)
    assert ("/pkg/policy", "/etc/claude-code") in ro
    assert ("/srv/course", "/course") in ro
    assert ("/state/sock/proxy.sock", PROXY_SOCKET) in ro
    assert ("/pkg/forwarder.py", FORWARDER) in ro
    assert ("/opt/claude/claude.exe", "/run/claude-pods/claude") in ro
    assert rw == [("/state/s/tmp", "/tmp"), ("/state/s/home", "/home/claude")]
    # /etc: symlinks into the read-only host view, except what the sandbox brings itself.
    links = {dest: target for target, dest in pairs(argv, "--symlink", 2)}
    assert links["/etc/ld.so.cache"] == "/run/host/etc/ld.so.cache"
    assert links["/etc/localtime"] == "/usr/share/zoneinfo/UTC"
    assert "/etc/passwd" not in links
    assert "/etc/hosts" not in links
    assert "/etc/claude-code" not in links  # never the host's own policy
    assert ("0644",) in pairs(argv, "--perms", 1)
    assert ("7", "/etc/passwd") in pairs(argv, "--file", 2)
    assert ("/etc", "/run/host/etc") in ro
    assert ("/proc",) in pairs(argv, "--proc", 1)
    assert ("/dev",) in pairs(argv, "--dev", 1)
    # Everything else read-only, and the last mount operation says so.
    end = argv.index("--")
    assert argv[end - 6 : end] == ["--remount-ro", "/", "--chdir", "/home/claude", "--info-fd", "8"]


def test_no_tmp_dir_means_a_tmpfs() -> None:
    argv = bwrap_argv(SPEC, options(tmp_source=None))
    assert ("/tmp",) in pairs(argv, "--tmpfs", 1)


def test_command_runs_behind_the_relay_without_a_shell() -> None:
    nasty = SandboxSpec(
        session_id="0badcafe", user="u", terminal="1", command=("echo", "$(rm -rf ~)", "'; x")
    )
    argv = bwrap_argv(nasty, options())
    tail = argv[argv.index("--") :]
    assert tail == [
        "--",
        "/usr/bin/python3",
        "-I",
        "-S",
        FORWARDER,
        "--listen",
        "8787",
        "--unix",
        PROXY_SOCKET,
        "--ready-fd",
        "9",
        "--",
        "echo",
        "$(rm -rf ~)",
        "'; x",
    ]
    # The spec's command wins over the default; without relay the program runs directly.
    plain = bwrap_argv(SPEC, options(forwarder=None))
    assert plain[plain.index("--") :] == ["--", "/run/claude-pods/bin/claude-pods-launch"]


def test_env_values_equal_to_the_separator_stay_arguments() -> None:
    args, tail = bwrap_parts(SPEC, options(extra_env={"ODD": "--"}))
    assert ("ODD", "--") in pairs(args, "--setenv", 2)
    assert tail[0] == "--"
    assert "--" not in args[-4:]


def test_environment_is_built_from_scratch() -> None:
    env = sandbox_env(SPEC, options())
    assert env["HOME"] == "/home/claude"
    assert env["PATH"].startswith("/run/claude-pods/bin:")
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:8787"
    assert env["ANTHROPIC_AUTH_TOKEN"] == "cpp1.x.y"
    assert env["CLAUDE_PODS_CLAUDE_BIN"] == "/run/claude-pods/claude"
    assert env["CLAUDE_PODS_COURSE_DIR"] == "/home/claude"
    assert env["DISABLE_TELEMETRY"] == "1"
    assert env["EDITOR"] == "vi"
    assert set(env) == {
        "PATH", "TERM", "LANG", "USER", "LOGNAME", "SHELL", "TMPDIR", "HOME",
        "CLAUDE_PODS_COURSE_DIR", "DISABLE_TELEMETRY", "EDITOR", "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_BASE_URL", "CLAUDE_PODS_CLAUDE_BIN",
    }  # fmt: skip
    argv = bwrap_argv(SPEC, options())
    assert dict(pairs(argv, "--setenv", 2)) == env


@pytest.mark.parametrize(
    "extra",
    [
        {"ANTHROPIC_API_KEY": "anything"},
        {"COPY": KEY},
        {"EMBEDDED": f"Bearer {KEY} trailing"},
        {KEY: "as a name"},
    ],
)
def test_the_real_key_never_gets_in(extra: dict[str, str]) -> None:
    for opts in (options(extra_env=extra), options(policy_env=extra)):
        env = sandbox_env(SPEC, opts)
        assert "ANTHROPIC_API_KEY" not in env
        assert all(KEY not in k and KEY not in v for k, v in env.items())
        assert KEY not in " ".join(bwrap_argv(SPEC, opts))
    spec = SandboxSpec(session_id="0badcafe", user="u", terminal="1", env=extra)
    assert KEY not in " ".join(bwrap_argv(spec, options()))


def test_layout_dictates_home_and_base_url() -> None:
    env = sandbox_env(
        SPEC, options(extra_env={"HOME": "/root", "ANTHROPIC_BASE_URL": "http://evil"})
    )
    assert env["HOME"] == "/home/claude"
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:8787"
    no_proxy = sandbox_env(SPEC, options(proxy_socket=None, extra_env={"ANTHROPIC_BASE_URL": "x"}))
    assert "ANTHROPIC_BASE_URL" not in no_proxy


def test_course_becomes_the_working_directory_when_configured() -> None:
    opts = options(course_source="/srv/course", working_dir="/course")
    argv = bwrap_argv(SPEC, opts)
    assert pairs(argv, "--chdir", 1) == [("/course",)]
    assert sandbox_env(SPEC, opts)["CLAUDE_PODS_COURSE_DIR"] == "/course"


def test_own_etc_files() -> None:
    files = etc_files(options())
    assert b"claude:x:1000:1000:" in files["/etc/passwd"]
    assert b"/home/claude:/bin/bash" in files["/etc/passwd"]
    assert files["/etc/hostname"] == b"sandbox\n"
    assert b"claude:x:1000:" in files["/etc/group"]


def test_empty_command_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        bwrap_argv(SPEC, options(command=()))


def test_files_holding_the_key_are_covered() -> None:
    argv = bwrap_argv(
        SPEC, options(hidden=("/etc/environment", "/etc/profile.d/key.sh"), empty_file="/s/empty")
    )
    ro = pairs(argv, "--ro-bind", 2)
    assert ("/s/empty", "/run/host/etc/environment") in ro
    assert ("/s/empty", "/run/host/etc/profile.d/key.sh") in ro
    # after the view of /etc they cover
    assert ro.index(("/etc", "/run/host/etc")) < ro.index(("/s/empty", "/run/host/etc/environment"))
