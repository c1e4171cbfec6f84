"""The key proxy the server embeds for local sandboxes."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from claude_pods_proxy.client import revoke
from claude_pods_proxy.config import ConfigError, ProxyConfig
from claude_pods_proxy.tokens import mint_token

from jupyter_claude_pods.embedded import NO_KEY, EmbeddedProxy

from .conftest import SECRET_KEY


@pytest.fixture
def dirs(state_dir: Path) -> Iterator[tuple[Path, Path]]:
    state, sock = state_dir / "proxy", state_dir / "sock"
    state.mkdir()
    sock.mkdir()
    return state, sock


async def post_unix(path: Path, token: str) -> int:
    """POST /v1/messages through the proxy's Unix socket, as the relay does."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    body = json.dumps({"model": "claude-x", "max_tokens": 8, "messages": []}).encode()
    writer.write(
        b"POST /v1/messages HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\n"
        b"anthropic-version: 2023-06-01\r\nConnection: close\r\n"
        + f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    status = (await reader.readline()).split()[1]
    writer.close()
    return int(status)


async def test_serves_on_a_unix_socket_with_its_own_secret(
    server_env: None, dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, fake_upstream: Any
) -> None:
    # Settings meant for a standalone proxy must not steer the embedded one.
    monkeypatch.setenv("CLAUDE_PODS_PROXY_PORT", "1")
    monkeypatch.setenv("CLAUDE_PODS_TOKEN_SECRET_FILE", "/nonexistent")
    proxy = EmbeddedProxy(*dirs, socket_mode=0o666)
    await proxy.start()
    try:
        assert proxy.running
        assert proxy.problem == ""
        assert proxy.secret is not None
        assert len(proxy.secret) >= 32
        assert stat.S_IMODE(proxy.socket_path.stat().st_mode) == 0o666
        assert proxy.admin_url.startswith("http://127.0.0.1:")
        assert SECRET_KEY in proxy.key_values()
        token = mint_token(proxy.secret, "alice", "s1", 60)
        assert await post_unix(proxy.socket_path, token) == 200
        assert dict(fake_upstream.requests[-1].headers)["X-Api-Key"] == SECRET_KEY
        await revoke(proxy.admin_url, proxy.secret, "s1")
        assert await post_unix(proxy.socket_path, token) == 401
        other = mint_token(b"another-secret-of-at-least-32-bytes!!", "alice", "s2", 60)
        assert await post_unix(proxy.socket_path, other) == 401
    finally:
        await proxy.stop()
    assert not proxy.running


async def test_without_a_key_it_does_not_start_and_says_why(
    server_env: None, dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    proxy = EmbeddedProxy(*dirs)
    await proxy.start()
    assert not proxy.running
    assert proxy.secret is None
    assert proxy.problem == NO_KEY
    assert not proxy.socket_path.exists()


async def test_a_bad_key_file_is_reported_without_its_content(
    server_env: None, dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("not a valid key\nwith spaces")
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    monkeypatch.setenv("CLAUDE_PODS_KEY_FILE", str(key_file))
    proxy = EmbeddedProxy(*dirs)
    await proxy.start()
    assert not proxy.running
    assert proxy.problem.startswith("the key proxy of this Jupyter server could not start")
    assert "with spaces" not in proxy.problem


def test_unix_socket_path_length_is_checked() -> None:
    with pytest.raises(ConfigError, match="too long"):
        ProxyConfig(token_secret=b"x" * 32, key_value="k" * 20, unix_socket="/" + "a" * 120)


async def test_the_key_leaves_the_server_environment_once_the_proxy_holds_it(
    server_env: None, dirs: tuple[Path, Path], fake_upstream: Any
) -> None:
    """Kernels and other children of the server must not inherit the real key."""
    assert os.environ.get("ANTHROPIC_API_KEY") == SECRET_KEY
    proxy = EmbeddedProxy(*dirs)
    await proxy.start()
    try:
        assert proxy.running
        assert "ANTHROPIC_API_KEY" not in os.environ
        child = subprocess.run(
            [
                sys.executable,
                "-c",
                "import os; print(os.environ.get('ANTHROPIC_API_KEY', 'absent'))",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        assert child.stdout.strip() == "absent"
        assert SECRET_KEY in proxy.key_values()  # still scrubbed from sandboxes by value
        assert proxy.secret is not None
        assert await post_unix(proxy.socket_path, mint_token(proxy.secret, "a", "s1", 60)) == 200
    finally:
        await proxy.stop()
    # A restart of the proxy (same server) still has the key.
    await proxy.start()
    try:
        assert proxy.running
        assert proxy.secret is not None
        assert await post_unix(proxy.socket_path, mint_token(proxy.secret, "a", "s2", 60)) == 200
        assert dict(fake_upstream.requests[-1].headers)["X-Api-Key"] == SECRET_KEY
    finally:
        await proxy.stop()
