"""Tokens at the proxy: unknown, expired, wrong-purpose and revoked tokens get a 401 the CLI
does not retry; revocation (session or user) is immediate, cuts streams in flight and
survives a restart; the admin endpoints need an admin token."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from claude_pods_proxy import client
from claude_pods_proxy.app import ProxyServer
from claude_pods_proxy.tokens import mint_token

from tests.fakes.anthropic_api import FakeAnthropicAPI, Reply

from .conftest import MakeProxy
from .helpers import SECRET, RawConnection, admin_token, body, raw_request, request_bytes, token

OTHER_SECRET = b"not-the-proxy-secret-0123456789abcdef-xyz"


async def send(proxy: ProxyServer, auth: str | None, path: str = "/v1/messages") -> Any:
    return await raw_request(proxy.port, request_bytes(path, body=body(), auth=auth))


def assert_401(resp: Any, fragment: str) -> None:
    assert resp.status == 401
    assert resp.json["type"] == "error"
    assert resp.json["error"]["type"] == "authentication_error"
    assert fragment in resp.json["error"]["message"]
    assert resp.header("x-should-retry") == "false"
    assert resp.header("request-id") == resp.json["request_id"]


@pytest.mark.parametrize(
    ("auth", "fragment"),
    [
        (None, "Missing"),
        ("", "Missing"),
        ("sk-ant-api03-some-real-looking-key", "malformed"),
        ("cpp1.e30.AAAA", "bad signature"),
        (mint_token(OTHER_SECRET, "alice", "s", 600), "bad signature"),
        (token(ttl=600)[:-2] + "xx", "bad signature"),
        (mint_token(SECRET, "alice", "s", 60, now=time.time() - 120), "expired"),
        (mint_token(SECRET, "alice", "s", 600, purpose="admin"), "wrong purpose"),
        (mint_token(SECRET, "alice", "s", 40 * 86400), "lifetime"),
    ],
)
async def test_bad_tokens_are_refused_without_retry(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI, auth: str | None, fragment: str
) -> None:
    resp = await send(proxy, auth)
    assert_401(resp, fragment)
    assert fake_api.requests == []


async def test_non_bearer_authorization_is_refused(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI
) -> None:
    data = request_bytes(
        "/v1/messages", body=body(), headers=[("Authorization", f"Basic {token()}")]
    )
    assert_401(await raw_request(proxy.port, data), "Missing")
    assert fake_api.requests == []


async def test_revoked_session_is_refused_at_once_and_after_restart(
    make_proxy: MakeProxy, fake_api: FakeAnthropicAPI
) -> None:
    proxy = await make_proxy()
    mine, other = token(session="s1"), token(session="s2")
    assert (await send(proxy, mine)).status == 200
    assert await client.revoke(proxy.url, SECRET, "s1") == 0
    assert_401(await send(proxy, mine), "revoked")
    assert_401(await send(proxy, mine, "/v1/messages/count_tokens"), "revoked")
    assert (await send(proxy, other)).status == 200
    assert len(fake_api.requests) == 2
    await proxy.stop()
    again = await make_proxy()
    assert_401(await send(again, mine), "revoked")
    assert (await send(again, other)).status == 200


async def test_revocation_cuts_a_stream_in_flight(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI, access_lines: list[str]
) -> None:
    fake_api.script(Reply(stall_after=4))
    conn = await RawConnection.open(proxy.port)
    conn.send(request_bytes("/v1/messages", body=body(stream=True), auth=token(session="live")))
    head = await conn.read_head()
    assert head.status == 200
    started = time.monotonic()
    assert await client.revoke(proxy.url, SECRET, "live") == 1
    rest = await conn.read_body(head)
    conn.close()
    await fake_api.wait_disconnects(1, timeout=5)
    assert time.monotonic() - started < 2
    events = rest.body.split(b"\n\n")
    assert events[-2].startswith(b"event: error\n")
    assert json.loads(events[-2].split(b"data: ", 1)[1])["error"]["type"] == "authentication_error"
    logs = [json.loads(line) for line in access_lines]
    assert [entry["outcome"] for entry in logs if entry.get("session") == "live"] == ["revoked"]


async def test_revoking_a_user_ends_only_tokens_issued_before(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI
) -> None:
    a1, a2, bob = token("alice", "a1"), token("alice", "a2"), token("bob", "b1")
    assert await client.revoke_user(proxy.url, SECRET, "alice") == 0
    assert_401(await send(proxy, a1), "revoked")
    assert_401(await send(proxy, a2), "revoked")
    assert (await send(proxy, bob)).status == 200
    # a token minted after the revocation (next second and later) works
    later = mint_token(SECRET, "alice", "a3", 600, now=time.time() + 1)
    assert (await send(proxy, later)).status == 200


async def test_admin_endpoints_need_an_admin_token(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI
) -> None:
    revoke = b'{"session": "s1"}'
    for auth in (None, token(), mint_token(OTHER_SECRET, "ops", "admin", 60, purpose="admin")):
        resp = await raw_request(proxy.port, request_bytes("/admin/revoke", body=revoke, auth=auth))
        assert resp.status == 401
        assert resp.json["error"]["type"] == "authentication_error"
        resp = await raw_request(
            proxy.port, request_bytes("/admin/usage?session=s1", method="GET", auth=auth), "GET"
        )
        assert resp.status == 401
    assert proxy.store.revoked_sessions == {}
    with pytest.raises(client.ProxyAdminError) as err:
        await client.revoke(proxy.url, OTHER_SECRET, "s1")
    assert err.value.code == 401


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[]",
        b"{}",
        b'{"session": "a", "user": "b"}',
        b'{"session": ""}',
        b'{"session": 5}',
        b'{"session": "a", "expires": "soon"}',
    ],
)
async def test_revoke_validates_its_body(proxy: ProxyServer, payload: bytes) -> None:
    resp = await raw_request(
        proxy.port, request_bytes("/admin/revoke", body=payload, auth=admin_token())
    )
    assert resp.status == 400
    assert resp.json["error"]["type"] == "invalid_request_error"
    assert proxy.store.revoked_sessions == {}
    assert proxy.store.revoked_users == {}


async def test_usage_endpoint_answers_admins(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI
) -> None:
    assert (await send(proxy, token(session="u1"))).status == 200
    resp = await raw_request(
        proxy.port,
        request_bytes("/admin/usage?session=u1&user=alice", method="GET", auth=admin_token()),
        "GET",
    )
    assert resp.status == 200
    assert resp.json["session"]["requests"] == 1
    assert resp.json["user"]["total"]["requests"] == 1
    missing = await raw_request(
        proxy.port, request_bytes("/admin/usage", method="GET", auth=admin_token()), "GET"
    )
    assert missing.status == 400
