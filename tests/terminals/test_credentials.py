"""Each sandbox gets its own proxy session token (never the real key), revoked at its end.

Runs the real key proxy and the fake Messages API next to the fake Kubernetes API.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from claude_pods_proxy.app import ProxyServer
from claude_pods_proxy.config import ProxyConfig
from claude_pods_proxy.tokens import verify_token
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from tests.fakes.anthropic_api import FakeAnthropicAPI

from .conftest import SECRET_KEY

TOKEN = re.compile(r"token=(cpp1\.[\w.-]+)")
TOKEN_SECRET = b"a-test-token-signing-secret-of-at-least-32-bytes"


@pytest.fixture
def key_proxy(io_loop: Any, tmp_path: Any) -> Iterator[ProxyServer]:
    upstream = FakeAnthropicAPI((SECRET_KEY,))
    io_loop.run_sync(upstream.start)
    proxy = ProxyServer(
        ProxyConfig(
            token_secret=TOKEN_SECRET,
            key_value=SECRET_KEY,
            port=0,
            upstream_url=upstream.url,
            db_path=str(tmp_path / "usage.sqlite3"),
        )
    )
    io_loop.run_sync(proxy.start)
    proxy.fake_upstream = upstream  # type: ignore[attr-defined]
    yield proxy
    io_loop.run_sync(proxy.stop)
    io_loop.run_sync(upstream.stop)


@pytest.fixture
def extra_config(key_proxy: ProxyServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("CLAUDE_PODS_TOKEN_SECRET", TOKEN_SECRET.decode())
    return {"KubernetesBackend": {"proxy_url": key_proxy.url, "extra_env": {"PS1": "$ "}}}


async def ask_model(base_url: str, token: str) -> int:
    body = {"model": "claude-x", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
    try:
        resp = await AsyncHTTPClient().fetch(
            f"{base_url}/v1/messages",
            method="POST",
            body=json.dumps(body),
            headers={"Authorization": f"Bearer {token}", "anthropic-version": "2023-06-01"},
        )
    except HTTPClientError as e:
        return e.code
    return resp.code


async def test_sandbox_gets_a_session_token_that_is_revoked_when_it_ends(
    jp_fetch: Any, fake_kube: Any, open_terminal: Any, key_proxy: Any, manager: Any
) -> None:
    name, term = await open_terminal()
    await term.expect("$ ")
    term.stdin('echo "base=$ANTHROPIC_BASE_URL"; echo "token=$ANTHROPIC_AUTH_TOKEN"\r')
    out = await term.expect(lambda o: TOKEN.search(o) is not None)
    token = TOKEN.search(out).group(1)  # type: ignore[union-attr]
    assert f"base={key_proxy.url}" in out
    claims = verify_token(TOKEN_SECRET, token)
    (pod,) = fake_kube.created_bodies
    assert claims.session == pod["metadata"]["labels"]["claude-pods.jupyter.org/session"]
    assert SECRET_KEY not in json.dumps(pod)
    assert SECRET_KEY not in term.output

    # The token works through the proxy, which swaps in the real key.
    assert await ask_model(key_proxy.url, token) == 200
    seen = {k.lower(): v for k, v in key_proxy.fake_upstream.requests[-1].headers}
    assert seen["x-api-key"] == SECRET_KEY
    assert token not in json.dumps(seen)

    await jp_fetch("api", "terminals", name, method="DELETE")
    await manager.wait_reaped()
    assert await ask_model(key_proxy.url, token) == 401


async def test_two_sandboxes_get_different_tokens(fake_kube: Any, open_terminal: Any) -> None:
    tokens = []
    for _ in range(2):
        _name, term = await open_terminal()
        await term.expect("$ ")
        term.stdin('echo "token=$ANTHROPIC_AUTH_TOKEN"\r')
        out = await term.expect(lambda o: TOKEN.search(o) is not None)
        tokens.append(TOKEN.search(out).group(1))  # type: ignore[union-attr]
    assert tokens[0] != tokens[1]
    sessions = {verify_token(TOKEN_SECRET, t).session for t in tokens}
    assert len(sessions) == 2
