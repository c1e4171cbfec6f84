"""Smoke tests of the sandbox image: built with podman (see conftest), run without network.

Every container runs with ``--network=none``; most also with the restrictions of the
sandbox pod (read-only root, no capabilities, no privilege escalation, tmpfs home and /tmp)
so the checks see what a terminal sees.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from jupyter_claude_pods import __version__
from jupyter_claude_pods.policy import (
    CLAUDE_CODE_VERSION,
    LAUNCHER,
    MANAGED_MCP,
    MANAGED_SETTINGS,
    sandbox_env,
)

from .builder import Bases, Podman, Timing, build_image

pytestmark = [pytest.mark.images, pytest.mark.timeout(1500)]

HOME = "/home/claude"
#: Like the pod: read-only root, emptyDirs for home and /tmp, no capabilities, no setuid.
#: The home tmpfs is chowned to the user (``U``), as fsGroup does for the pod's emptyDir.
POD_LIKE = (
    "--network=none",
    "--read-only",
    "--read-only-tmpfs=false",
    "--cap-drop=ALL",
    "--security-opt=no-new-privileges",
    f"--tmpfs={HOME}:rw,U",
    "--tmpfs=/tmp:rw,mode=1777",
)


@pytest.fixture(scope="module")
def image(podman: Podman, bases: Bases, image_timing: Timing) -> str:
    return build_image(podman, bases, image_timing, "sandbox")


class Sandbox:
    def __init__(self, podman: Podman, image: str) -> None:
        self.podman = podman
        self.image = image

    def sh(self, script: str, *options: str, pod_like: bool = True) -> Any:
        """Run ``sh -c script`` in a fresh container; the completed process."""
        flags = POD_LIKE if pod_like else ("--network=none",)
        return self.podman.run(
            "run", "--rm", *flags, *options, self.image, "sh", "-c", script, check=False
        )

    def out(self, script: str, *options: str, pod_like: bool = True) -> str:
        result = self.sh(script, *options, pod_like=pod_like)
        assert result.returncode == 0, (script, result.stdout, result.stderr)
        return str(result.stdout)


@pytest.fixture(scope="module")
def sandbox(podman: Podman, image: str) -> Sandbox:
    return Sandbox(podman, image)


def test_cli_is_the_pinned_version(sandbox: Sandbox) -> None:
    assert sandbox.out("claude --version").strip() == f"{CLAUDE_CODE_VERSION} (Claude Code)"
    assert sandbox.out("command -v claude").strip() == "/usr/local/bin/claude"


def test_no_node_or_package_manager_left_from_the_build_stage(sandbox: Sandbox) -> None:
    # The CLI is a native binary; Node and npm stay in the build stage.
    for tool in ("node", "npm", "npx", "sudo", "doas"):
        result = sandbox.sh(f"command -v {tool}")
        assert result.returncode != 0, f"{tool} is in the image: {result.stdout}"


def test_runs_as_uid_1000_in_its_home(sandbox: Sandbox, podman: Podman, image: str) -> None:
    assert sandbox.out('id -u; id -g; id -un; pwd; echo "$HOME"').split() == [
        "1000",
        "1000",
        "claude",
        HOME,
        HOME,
    ]
    config = json.loads(podman.run("image", "inspect", image).stdout)[0]["Config"]
    # Numeric, so that runAsNonRoot can be verified by the kubelet without /etc/passwd.
    assert config["User"] == "1000:1000"
    assert config["Cmd"] == ["sleep", "infinity"]


def test_policy_files_come_from_the_package_root_owned_read_only(sandbox: Sandbox) -> None:
    listing = sandbox.out(
        "stat -c '%u %g %a %n' /etc/claude-code /etc/claude-code/* /usr/local/bin/claude-pods-launch"
    )
    assert listing.splitlines() == [
        "0 0 755 /etc/claude-code",
        "0 0 644 /etc/claude-code/managed-mcp.json",
        "0 0 644 /etc/claude-code/managed-settings.json",
        "0 0 755 /usr/local/bin/claude-pods-launch",
    ]
    for path, source in (
        ("/etc/claude-code/managed-settings.json", MANAGED_SETTINGS),
        ("/etc/claude-code/managed-mcp.json", MANAGED_MCP),
        ("/usr/local/bin/claude-pods-launch", LAUNCHER),
    ):
        assert sandbox.out(f"cat {path}") == source.read_text(), path


def test_policy_files_cannot_be_changed_by_the_user(sandbox: Sandbox) -> None:
    # Without the pod's read-only root, so only the file permissions stand in the way.
    script = (
        "for f in /etc/claude-code/managed-settings.json /etc/claude-code/managed-mcp.json; do"
        '  if echo "{}" > "$f"; then echo "wrote $f"; fi;'
        '  if rm -f "$f"; then test -e "$f" || echo "removed $f"; fi;'
        "done;"
        " if touch /etc/claude-code/extra.json; then echo created; fi;"
        " if mv /etc/claude-code /tmp/moved; then echo moved; fi"
    )
    result = sandbox.sh(script, pod_like=False)
    assert result.stdout == "", result.stdout
    assert "Permission denied" in result.stderr
    assert sandbox.out("cat /etc/claude-code/managed-mcp.json", pod_like=False) == (
        MANAGED_MCP.read_text()
    )


def test_no_setuid_or_setgid_files_and_no_sudo(sandbox: Sandbox) -> None:
    # Run as root to see every directory; the pod forbids escalation anyway
    # (allowPrivilegeEscalation: false), the image keeps nothing to escalate with.
    found = sandbox.out("find / -xdev -perm /6000 -type f", "--user=0", pod_like=False)
    assert found == ""
    assert sandbox.sh("test -e /usr/bin/sudo || test -e /etc/sudoers").returncode != 0


def test_nothing_writable_outside_home_and_tmp(sandbox: Sandbox) -> None:
    # GNU find's -writable asks access(2) as uid 1000, on the image's own permissions
    # (the root is not read-only here). Pruned: /proc, /sys and /dev are the runtime's,
    # not the image's: /dev/shm and /dev/mqueue are per-pod tmpfs mounts, /proc/self
    # is the process's own. /var/tmp is a symlink to /tmp (access() follows it).
    # find exits 1 for the directories uid 1000 cannot read (/root): nothing in them is
    # reachable for it anyway.
    script = (
        "find / \\( -path /proc -o -path /sys -o -path /dev \\) -prune -o -writable -print"
        " 2>/dev/null || true"
    )
    writable = set(sandbox.out(script, pod_like=False).split())
    outside = {
        path
        for path in writable
        if not (path in ("/tmp", HOME) or path.startswith(("/tmp/", f"{HOME}/")))
    }
    assert outside == {"/var/tmp"}, sorted(outside)
    assert sandbox.out("readlink /var/tmp", pod_like=False).strip() == "/tmp"
    # No file of the user's outside its home either (as root, to see everything).
    owned = sandbox.out(
        "find / -xdev \\( -user 1000 -o -group 1000 \\) -print", "--user=0", pod_like=False
    ).split()
    assert [p for p in owned if p != HOME and not p.startswith(f"{HOME}/")] == []


def test_pod_like_container_can_write_only_home_and_tmp(sandbox: Sandbox) -> None:
    script = (
        "for d in $HOME /tmp /var/tmp /etc /usr/local/bin /opt /var /; do"
        '  if touch "$d/probe" 2>/dev/null; then echo "$d ok"; else echo "$d ro"; fi;'
        "done"
    )
    assert sandbox.out(script).split("\n")[:-1] == [
        f"{HOME} ok",
        "/tmp ok",
        "/var/tmp ok",
        "/etc ro",
        "/usr/local/bin ro",
        "/opt ro",
        "/var ro",
        "/ ro",
    ]


def test_environment_matches_the_policy(sandbox: Sandbox) -> None:
    env = dict(line.split("=", 1) for line in sandbox.out("env").splitlines() if "=" in line)
    for name, value in sandbox_env().items():
        assert env.get(name) == value, name
    assert "ANTHROPIC_API_KEY" not in env
    assert "ANTHROPIC_AUTH_TOKEN" not in env


def test_launcher_without_a_token_says_so_and_claude_starts(sandbox: Sandbox) -> None:
    # No TTY, so the real CLI stops at once ("Input must be provided ..."): what matters is
    # the launcher's message, that the policy is in place, and that claude ran.
    result = sandbox.sh("claude-pods-launch </dev/null")
    assert "no API key is configured for this terminal" in result.stderr
    assert "Not logged in" in result.stderr
    assert "is missing, so the read-only policy is NOT enforced" not in result.stderr
    assert "not installed in this sandbox" not in result.stderr
    assert "Input must be provided" in result.stderr, result.stderr
    assert result.returncode == 1


def test_labels(podman: Podman, image: str) -> None:
    config = json.loads(podman.run("image", "inspect", image).stdout)[0]["Config"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "claude-pods-sandbox"
    assert labels["org.opencontainers.image.version"] == __version__
    assert labels["org.opencontainers.image.source"].startswith(("https://", "git@", "ssh://"))
    assert "BSD-3-Clause" in labels["org.opencontainers.image.licenses"]
    assert CLAUDE_CODE_VERSION in labels["org.opencontainers.image.description"]


def test_home_is_private_and_the_user_has_bash(sandbox: Sandbox) -> None:
    listing = sandbox.out(f"stat -c '%u %g %a' {HOME}; getent passwd claude", pod_like=False)
    mode, entry = listing.splitlines()
    assert mode == "1000 1000 750"
    assert entry == f"claude:x:1000:1000::{HOME}:/bin/bash"


def test_image_adds_little_but_the_cli(podman: Podman, bases: Bases, image: str) -> None:
    # The base + the CLI (245 MB) + policy and user: a build stage leaking into the image
    # (Node, npm's cache, a second copy of the binary in another layer) adds 100 MB or more.
    def size(name: str) -> int:
        return int(podman.run("image", "inspect", "--format", "{{.Size}}", name).stdout)

    added = size(image) - size(bases.debian)
    assert 240e6 < added < 265e6, added
