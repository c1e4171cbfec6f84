"""The sandbox policy for the Claude Code CLI, in one place for every backend.

The local (bubblewrap) backend and the sandbox image both use these files:

* :data:`POLICY_DIR` holds ``managed-settings.json`` and ``managed-mcp.json``. Mount it
  read-only at ``/etc/claude-code/`` (the Linux managed-settings path). Managed settings
  win over every user, project and command-line setting. They allow Read, Glob and Grep,
  deny every other tool (MCP too), pin ``dontAsk`` mode (nothing can be approved at a
  prompt), disable bypass and auto modes, ignore non-managed permission rules and hooks,
  and turn off sideloading, marketplaces, telemetry and non-essential traffic. The empty
  ``managed-mcp.json`` turns MCP off entirely.
* :data:`LAUNCHER` is ``claude-pods-launch``, the terminal's program: it starts
  ``claude --tools Read,Glob,Grep`` in the course directory, at the course stage if one
  is given.
* :func:`seed_home` writes the ``~/.claude.json`` without which interactive ``claude``
  stops at the onboarding (whose connectivity check fails offline) or at the
  workspace-trust dialog.
* :func:`sandbox_env` is the non-secret environment every sandbox needs.

The policy was checked against :data:`CLAUDE_CODE_VERSION` (``tests/policy`` runs the
real CLI against it); the managed settings refuse to start any other version.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

__all__ = [
    "CLAUDE_CODE_VERSION",
    "LAUNCHER",
    "MANAGED_MCP",
    "MANAGED_SETTINGS",
    "POLICY_DIR",
    "claude_json",
    "find_claude",
    "sandbox_env",
    "seed_home",
]

#: The Claude Code CLI version the policy is written and tested for (npm
#: ``@anthropic-ai/claude-code``). The managed settings pin it with
#: ``requiredMinimumVersion``/``requiredMaximumVersion``, and the launcher's install hint
#: names it; tests check that both agree with this constant.
CLAUDE_CODE_VERSION = "2.1.197"

#: The directory to bind-mount read-only at ``/etc/claude-code/``.
POLICY_DIR: Path = Path(__file__).resolve().parent
MANAGED_SETTINGS: Path = POLICY_DIR / "managed-settings.json"
MANAGED_MCP: Path = POLICY_DIR / "managed-mcp.json"
#: The POSIX sh launcher that starts ``claude`` in the course directory.
LAUNCHER: Path = POLICY_DIR / "claude-pods-launch"

#: Where ``npm install --prefix .cache/npm`` puts the CLI in a source checkout.
_CHECKOUT = POLICY_DIR.parents[1]
_CHECKOUT_CLAUDE = _CHECKOUT / ".cache" / "npm" / "node_modules" / ".bin" / "claude"


def claude_json(workdir: str) -> dict[str, Any]:
    """The seeded ``~/.claude.json`` for a sandbox whose course directory is *workdir*.

    * ``hasCompletedOnboarding`` skips the whole first-run onboarding, including its
      connectivity check against api.anthropic.com that makes an offline CLI exit.
    * ``projects[workdir].hasTrustDialogAccepted`` skips the workspace-trust dialog
      (trust is inherited by subdirectories). The CLI looks the directory up by its
      real path, so when *workdir* is a symlink here, its target is trusted as well.
    * ``lastReleaseNotesSeen``/``lastOnboardingVersion`` and the project onboarding keys
      hide the "What's new" changelog and the getting-started tips.
    * ``officialMarketplaceAutoInstallAttempted`` stops the plugin-marketplace install
      (the managed settings block it too).

    No API-key approval is needed: the sandbox authenticates with
    ``ANTHROPIC_AUTH_TOKEN``, which the CLI uses without asking.
    """
    project = {
        "hasTrustDialogAccepted": True,
        "hasCompletedProjectOnboarding": True,
        "projectOnboardingSeenCount": 1,
    }
    paths = {os.path.normpath(workdir), os.path.realpath(workdir)}
    return {
        "hasCompletedOnboarding": True,
        "lastOnboardingVersion": CLAUDE_CODE_VERSION,
        "lastReleaseNotesSeen": CLAUDE_CODE_VERSION,
        "autoUpdates": False,
        "officialMarketplaceAutoInstallAttempted": True,
        "projects": {path: dict(project) for path in sorted(paths)},
    }


def seed_home(home: Path, workdir: str) -> None:
    """Write ``home/.claude.json`` (mode 0600) and create ``home/.claude/`` (mode 0700).

    An existing ``.claude.json`` (a persistent home) keeps its other keys; the seeded
    ones are set on top. The file is replaced atomically, never written through a
    symlink.
    """
    home = Path(home)
    config_dir = home / ".claude"
    config_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not config_dir.is_symlink():
        config_dir.chmod(0o700)

    target = home / ".claude.json"
    seeded = claude_json(workdir)
    data: dict[str, Any] = {}
    if target.is_file() and not target.is_symlink():
        with contextlib.suppress(OSError, ValueError):
            loaded = json.loads(target.read_text(encoding="utf-8"))
            if isinstance(loaded, dict):
                data = loaded
    projects = data.get("projects")
    projects = dict(projects) if isinstance(projects, dict) else {}
    for path, entry in seeded.pop("projects").items():
        old = projects.get(path)
        projects[path] = {**(old if isinstance(old, dict) else {}), **entry}
    data.update(seeded)
    data["projects"] = projects

    fd, tmp = tempfile.mkstemp(prefix=".claude.json.", dir=home)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        Path(tmp).replace(target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _executable(path: str) -> bool:
    return Path(path).is_file() and os.access(path, os.X_OK)


def find_claude() -> str | None:
    """The ``claude`` binary to run, or ``None``.

    ``$CLAUDE_PODS_CLAUDE_BIN`` when set (``None`` if it is not executable: an explicit
    choice is never second-guessed), else ``claude`` on ``PATH``, else the CLI that
    ``npm install --prefix .cache/npm`` put into this source checkout.
    """
    configured = os.environ.get("CLAUDE_PODS_CLAUDE_BIN")
    if configured:
        found = configured if os.sep in configured else shutil.which(configured)
        return found if found and _executable(found) else None
    on_path = shutil.which("claude")
    if on_path:
        return on_path
    if (_CHECKOUT / "pyproject.toml").is_file() and _executable(str(_CHECKOUT_CLAUDE)):
        return str(_CHECKOUT_CLAUDE)
    return None


def sandbox_env() -> dict[str, str]:
    """The non-secret environment every sandbox running the CLI needs.

    The managed ``env`` block sets the same switches, but only once the settings are
    loaded; the process environment also covers what the CLI does before that.

    * ``DISABLE_TELEMETRY``, ``DISABLE_ERROR_REPORTING``: no usage metrics, no error
      reports (Datadog and api.anthropic.com event logging).
    * ``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC``: no feature-flag fetches, release
      notes, update checks or model discovery; with it a ``claude -p`` run made no DNS
      lookup at all, without it the CLI kept resolving api.anthropic.com.
    * ``DISABLE_AUTOUPDATER``, ``DISABLE_UPDATES``: the pinned version stays; no
      background download, and ``claude update``/``claude install`` are refused.
    * ``CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL``: after onboarding the CLI
      otherwise contacts downloads.claude.ai and github.com to install a marketplace.
    * ``TERM``: the interactive UI needs a capable terminal type.

    ``CLAUDE_CODE_MAX_RETRIES`` is left at the CLI's default on purpose: the key proxy
    answers its own refusals with ``x-should-retry: false`` (the CLI gives up at once),
    while genuine upstream 429/529 answers deserve the CLI's backoff. ``IS_SANDBOX`` is
    never set (it would let root use ``--dangerously-skip-permissions``).
    """
    return {
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_UPDATES": "1",
        "CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL": "1",
        "TERM": "xterm-256color",
    }
