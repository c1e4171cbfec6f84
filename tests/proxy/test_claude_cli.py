"""End to end with the real Claude Code CLI (npm ``@anthropic-ai/claude-code@2.1.197``).

``claude -p`` runs as a sandbox would: a minimal environment, a fresh HOME, the proxy as
``ANTHROPIC_BASE_URL`` and a session token as ``ANTHROPIC_AUTH_TOKEN``. The fake upstream
must see the real key and never the token; after the session is revoked the CLI must
fail fast (the proxy's 401 carries ``x-should-retry: false``; without it the CLI retries
for minutes).

The CLI is found through ``$CLAUDE_PODS_CLAUDE_BIN`` or at :data:`DEFAULT_BIN`, where
``npm install --no-save --no-audit --no-fund --prefix .cache/npm
@anthropic-ai/claude-code@2.1.197`` puts it. Missing, the test fails under ``$CI`` and
is skipped elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from claude_pods_proxy import client
from claude_pods_proxy.app import ProxyServer

from tests.fakes.anthropic_api import DEFAULT_TEXT, FakeAnthropicAPI

from .helpers import REAL_KEY, SECRET, token

VERSION = "2.1.197"
REPO = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO / ".cache" / "npm" / "node_modules" / ".bin" / "claude"
INSTALL = (
    "npm install --no-save --no-audit --no-fund --prefix .cache/npm "
    f"@anthropic-ai/claude-code@{VERSION}"
)


def claude_bin() -> str:
    path = os.environ.get("CLAUDE_PODS_CLAUDE_BIN") or str(DEFAULT_BIN)
    if not os.access(path, os.X_OK):
        message = (
            f"Claude Code CLI not found at {path}. Install it with `{INSTALL}` in the "
            "repository root, or point CLAUDE_PODS_CLAUDE_BIN at a claude binary."
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    elapsed: float


async def run_claude(
    binary: str, base_url: str, auth_token: str, root: Path, timeout: float = 60
) -> Run:
    home = root / "home"
    home.mkdir(exist_ok=True)
    (home / ".claude.json").write_text(json.dumps({"hasCompletedOnboarding": True}))
    work = root / "work"
    work.mkdir(exist_ok=True)
    env = {  # `env -i` style: nothing from the test runner leaks in
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "TERM": "dumb",
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_AUTH_TOKEN": auth_token,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
    }
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        binary,
        "-p",
        "say hi",
        cwd=work,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"claude -p did not finish within {timeout} s")
    return Run(proc.returncode or 0, out.decode(), err.decode(), time.monotonic() - started)


async def test_real_cli_through_the_proxy_then_revoked(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI, tmp_path: Path, access_lines: list[str]
) -> None:
    binary = claude_bin()
    version = await asyncio.create_subprocess_exec(
        binary, "--version", stdout=asyncio.subprocess.PIPE, env={"PATH": "/usr/bin:/bin"}
    )
    version_out, _ = await asyncio.wait_for(version.communicate(), 30)
    assert VERSION in version_out.decode(), f"expected Claude Code {VERSION}: {version_out!r}"

    session_token = token(user="alice", session="cli-1")
    ok = await run_claude(binary, proxy.url, session_token, tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert DEFAULT_TEXT in ok.stdout

    upstream = fake_api.requests
    assert upstream, "nothing reached the upstream"
    assert {r.target for r in upstream} <= {"/v1/messages?beta=true", "/v1/messages/count_tokens"}
    assert any(r.target == "/v1/messages?beta=true" for r in upstream)
    for rec in upstream:
        assert rec.header_values("x-api-key") == [REAL_KEY]
        assert rec.header("authorization") is None
        assert all(session_token not in value for _, value in rec.headers)
        assert session_token.encode() not in rec.body
    entries = [json.loads(line) for line in access_lines]
    assert {(e["route"], e.get("session")) for e in entries if e["route"] != "local"} == {
        ("messages", "cli-1")
    }

    await client.revoke(proxy.url, SECRET, "cli-1")
    seen = len(upstream)
    denied = await run_claude(binary, proxy.url, session_token, tmp_path, timeout=60)
    print(
        f"\nclaude -p: ok in {ok.elapsed:.2f} s; after revocation failed in {denied.elapsed:.2f} s"
    )
    assert denied.returncode != 0
    assert DEFAULT_TEXT not in denied.stdout
    output = denied.stdout + denied.stderr
    assert "401" in output, output
    assert "token revoked" in output, output  # the proxy's own message, shown as is
    assert denied.elapsed < 10, f"the CLI took {denied.elapsed:.1f} s to give up"
    assert len(fake_api.requests) == seen  # refused at the proxy, nothing forwarded
    revoked = [json.loads(line) for line in access_lines[len(entries) :]]
    assert [e["outcome"] for e in revoked if e["route"] == "messages"] == ["revoked"]
