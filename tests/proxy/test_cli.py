"""The operator interface: ``claude-pods-proxy serve|token``, flags and environment variables."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from claude_pods_proxy.cli import _parser
from claude_pods_proxy.config import ConfigError, config_from_args, normalize_upstream
from claude_pods_proxy.tokens import verify_token

from tests.fakes.anthropic_api import FakeAnthropicAPI

from .helpers import REAL_KEY, SECRET, raw_request, request_bytes, token

SCRIPT = shutil.which("claude-pods-proxy", path=str(Path(sys.executable).parent)) or ""
BASE_ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SCRIPT, *args],
        env={**BASE_ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_console_script_is_installed() -> None:
    assert SCRIPT, "run `pip install -e .` so the claude-pods-proxy script exists"


def test_token_command(tmp_path: Path) -> None:
    out = run_cli(
        "token",
        "--user",
        "alice",
        "--session",
        "s-9",
        "--ttl",
        "120",
        env={"CLAUDE_PODS_TOKEN_SECRET": SECRET.decode()},
    )
    assert out.returncode == 0, out.stderr
    claims = verify_token(SECRET, out.stdout.strip())
    assert (claims.user, claims.session, claims.purpose) == ("alice", "s-9", "session")
    secret_file = tmp_path / "secret"
    secret_file.write_bytes(SECRET + b"\n")
    out = run_cli(
        "token",
        "--user",
        "ops",
        "--session",
        "admin",
        "--ttl",
        "60",
        "--admin",
        "--token-secret-file",
        str(secret_file),
    )
    assert out.returncode == 0, out.stderr
    assert verify_token(SECRET, out.stdout.strip(), purpose="admin").user == "ops"


def test_token_command_refuses_a_short_secret() -> None:
    out = run_cli(
        "token",
        "--user",
        "a",
        "--session",
        "s",
        "--ttl",
        "60",
        env={"CLAUDE_PODS_TOKEN_SECRET": "too-short"},
    )
    assert out.returncode == 2
    assert "at least 32 bytes" in out.stderr
    assert out.stdout == ""


@pytest.mark.parametrize(
    ("env", "args", "message"),
    [
        ({"ANTHROPIC_API_KEY": REAL_KEY}, [], "CLAUDE_PODS_TOKEN_SECRET"),
        ({"ANTHROPIC_API_KEY": REAL_KEY, "CLAUDE_PODS_TOKEN_SECRET": "short"}, [], "32 bytes"),
        ({"CLAUDE_PODS_TOKEN_SECRET": SECRET.decode()}, [], "ANTHROPIC_API_KEY"),
        (
            {"ANTHROPIC_API_KEY": REAL_KEY, "CLAUDE_PODS_TOKEN_SECRET": SECRET.decode()},
            ["--upstream-url", "http://api.example.com"],
            "unencrypted",
        ),
        (
            {"CLAUDE_PODS_TOKEN_SECRET": SECRET.decode()},
            ["--key-file", "/nonexistent/key"],
            "cannot read the API key file",
        ),
    ],
)
def test_serve_refuses_to_start_misconfigured(
    env: dict[str, str], args: list[str], message: str
) -> None:
    out = run_cli("serve", "--port", "0", *args, env=env)
    assert out.returncode == 2
    assert message in out.stderr
    assert REAL_KEY not in out.stderr + out.stdout


def parse(argv: list[str], environ: dict[str, str]) -> Any:
    return config_from_args(_parser().parse_args(["serve", *argv]), environ)


def test_flags_win_over_environment(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(REAL_KEY)
    env = {
        "CLAUDE_PODS_TOKEN_SECRET": SECRET.decode(),
        "ANTHROPIC_API_KEY": "sk-from-env",
        "CLAUDE_PODS_UPSTREAM_URL": "https://gateway.example/anthropic/",
        "CLAUDE_PODS_SESSION_BUDGET_USD": "2.5",
        "CLAUDE_PODS_RATE_LIMIT_RPM": "30",
        "CLAUDE_PODS_ALLOWED_MODELS": "claude-sonnet-4-5, claude-haiku-4-5,",
        "CLAUDE_PODS_MAX_TOKENS": "32000",
    }
    cfg = parse(["--rate-limit-rpm", "90", "--key-file", str(key_file)], env)
    assert cfg.upstream_url == "https://gateway.example/anthropic"
    assert cfg.session_budget_usd == 2.5
    assert cfg.rate_limit_rpm == 90
    assert cfg.allowed_models == frozenset({"claude-sonnet-4-5", "claude-haiku-4-5"})
    assert cfg.max_tokens_cap == 32000
    assert (cfg.key_file, cfg.key_value) == (str(key_file), None)  # the file wins
    assert "sk-" not in repr(cfg)
    assert SECRET.decode() not in repr(cfg)
    defaults = parse([], {"CLAUDE_PODS_TOKEN_SECRET": SECRET.decode(), "ANTHROPIC_API_KEY": "k"})
    assert defaults.upstream_url == "https://api.anthropic.com"
    assert defaults.max_body_bytes == 32 * 1024 * 1024
    assert (defaults.connect_timeout, defaults.stall_timeout) == (10.0, 600.0)
    with pytest.raises(ConfigError, match="CLAUDE_PODS_RATE_LIMIT_RPM"):
        parse([], {**env, "CLAUDE_PODS_RATE_LIMIT_RPM": "many"})


@pytest.mark.parametrize(
    "url",
    [
        "ftp://api.anthropic.com",
        "https://user:pw@api.anthropic.com",
        "https://api.anthropic.com/?x=1",
        "https://api.anthropic.com/#f",
        "https://api.anthropic.com/a/../b",
        "https://api.anthropic.com/%2e%2e",
        "http://10.0.0.1:8080",
        "https://api.anthropic.com:99999",
        "api.anthropic.com",
    ],
)
def test_upstream_url_must_be_a_plain_base(url: str) -> None:
    with pytest.raises(ConfigError):
        normalize_upstream(url)


def test_loopback_http_upstream_is_allowed() -> None:
    assert normalize_upstream("http://127.0.0.1:9/") == "http://127.0.0.1:9"
    assert normalize_upstream("http://10.0.0.1:80", allow_http=True) == "http://10.0.0.1:80"


async def test_serve_runs_and_stops_on_sigterm(fake_api: FakeAnthropicAPI, tmp_path: Path) -> None:
    env = {
        **BASE_ENV,
        "ANTHROPIC_API_KEY": REAL_KEY,
        "CLAUDE_PODS_TOKEN_SECRET": SECRET.decode(),
        "CLAUDE_PODS_UPSTREAM_URL": fake_api.url,
    }
    proc = await asyncio.create_subprocess_exec(
        SCRIPT,
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--db",
        str(tmp_path / "u.db"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        assert proc.stdout is not None
        port = 0
        while not port:
            line = (await asyncio.wait_for(proc.stderr.readline(), 20)).decode()
            assert line, "the proxy exited before listening"
            if m := re.search(r"listening on http://127\.0\.0\.1:(\d+)", line):
                port = int(m.group(1))
        resp = await raw_request(port, request_bytes("/healthz", method="GET"), "GET")
        assert resp.status == 200
        resp = await raw_request(
            port, request_bytes("/v1/messages?beta=true", body=b'{"model":"m"}', auth=token())
        )
        assert resp.status == 200
        lines = [json.loads(await asyncio.wait_for(proc.stdout.readline(), 10)) for _ in range(2)]
        assert [(e["route"], e["status"]) for e in lines] == [("local", 200), ("messages", 200)]
        assert lines[1]["session"] == "sess-1"
        assert fake_api.requests[-1].header("x-api-key") == REAL_KEY
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
        rest = (await proc.stderr.read()).decode()
        assert "shutting down" in rest
        assert REAL_KEY not in rest
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
