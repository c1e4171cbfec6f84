"""Exact routing: two routes forwarded, warm-up probes answered locally, everything else 404,
and no request target, header or upstream redirect can steer a request anywhere else.

The attacks are sent as raw bytes over a socket, because HTTP libraries normalise
exactly the targets we need to send. "Nothing reached another host" is proved with a
canary listener on another loopback port: its connection count must stay zero. "Nothing
reached another path" is proved by the fake upstream, which records every request it
gets, 404s included.
"""

from __future__ import annotations

import pytest
from claude_pods_proxy.app import ProxyServer

from tests.fakes.anthropic_api import FakeAnthropicAPI, Reply

from .helpers import Canary, RawConnection, body, raw_request, request_bytes, token


def upstream_targets(api: FakeAnthropicAPI) -> list[str]:
    return [r.target for r in api.requests]


async def test_forwards_messages_with_beta_query_kept(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI
) -> None:
    resp = await raw_request(
        proxy.port, request_bytes("/v1/messages?beta=true", body=body(), auth=token())
    )
    assert resp.status == 200
    assert resp.json["content"][0]["text"].startswith("Hi! This is the FAKE")
    assert upstream_targets(fake_api) == ["/v1/messages?beta=true"]


async def test_forwards_count_tokens_without_query(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI
) -> None:
    resp = await raw_request(
        proxy.port, request_bytes("/v1/messages/count_tokens", body=body(), auth=token())
    )
    assert resp.status == 200
    assert resp.json["input_tokens"] > 0
    assert upstream_targets(fake_api) == ["/v1/messages/count_tokens"]


@pytest.mark.parametrize(
    ("query", "forwarded"),
    [
        ("", "/v1/messages"),
        ("?beta=false", "/v1/messages"),
        ("?beta=true&x=http://evil.example/", "/v1/messages?beta=true"),
        ("?x=1&beta=true", "/v1/messages?beta=true"),
        ("?beta=true%0d%0aHost:%20evil.example", "/v1/messages"),
        ("?beta=true#frag", "/v1/messages"),
        ("?url=//evil.example/v1/messages", "/v1/messages"),
    ],
)
async def test_only_beta_true_survives_from_the_query(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI, query: str, forwarded: str
) -> None:
    resp = await raw_request(
        proxy.port, request_bytes("/v1/messages" + query, body=body(), auth=token())
    )
    assert resp.status == 200
    assert upstream_targets(fake_api) == [forwarded]


@pytest.mark.parametrize("path", ["/", "/api/hello"])
async def test_warmup_probes_are_answered_locally(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI, path: str
) -> None:
    resp = await raw_request(proxy.port, request_bytes(path, method="HEAD"), method="HEAD")
    assert resp.status == 200
    assert "server" not in resp.header_names()
    assert fake_api.requests == []


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("GET", "/v1/messages"),
        ("HEAD", "/v1/messages"),
        ("PUT", "/v1/messages"),
        ("GET", "/"),
        ("POST", "/"),
        ("POST", "/api/hello"),
        ("GET", "/v1/models"),
        ("POST", "/v1/messages/batches"),
        ("POST", "/v1/messages/batches/msgbatch_1/cancel"),
        ("POST", "/v1/files"),
        ("POST", "/v1/complete"),
        ("POST", "/v1/messages/"),
        ("POST", "/V1/messages"),
        ("POST", "/v1/messages/count_tokens/"),
        ("POST", "/v1//messages"),
        ("POST", "/v1/messages;count_tokens"),
        ("POST", "/v1/messages%2fcount_tokens"),
        ("POST", "/api/event_logging/batch"),
        ("DELETE", "/admin/revoke"),
        ("GET", "/admin/revoke"),
        ("PROPFIND", "/v1/messages"),
    ],
)
async def test_everything_else_is_404_json_and_never_forwarded(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI, method: str, target: str
) -> None:
    data = request_bytes(
        target, method=method, body=body() if method == "POST" else b"", auth=token()
    )
    resp = await raw_request(proxy.port, data, method=method)
    assert resp.status == 404
    if method != "HEAD":
        assert resp.json["type"] == "error"
        assert resp.json["error"]["type"] == "not_found_error"
        assert resp.header("x-should-retry") == "false"
    assert fake_api.requests == []


@pytest.mark.parametrize(
    "target",
    [
        "http://{canary}/v1/messages",
        "http://{canary}/v1/messages?beta=true",
        "https://{canary}/v1/messages",
        "//{canary}/v1/messages",
        "//{canary}/v1/messages?beta=true",
        "http://evil.example/v1/messages",
        "//evil.example/v1/messages",
        "/v1/messages/../../x",
        "/v1/messages/../messages",
        "/v1/messages/./count_tokens",
        "/v1/%2e%2e/x",
        "/v1/%2e%2e/v1/messages",
        "/v1/messages/%2e%2e/%2e%2e/{canary}",
        "/v1/messages/batches",
        "/v1/messages@{canary}",
        "/v1/messages.{canary}",
        "@{canary}/v1/messages",
        "{canary}/v1/messages",
        "*",
    ],
)
async def test_request_targets_cannot_reach_another_host_or_path(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI, canary: Canary, target: str
) -> None:
    target = target.format(canary=f"127.0.0.1:{canary.port}")
    resp = await raw_request(proxy.port, request_bytes(target, body=body(), auth=token()))
    assert resp.status in (400, 404), resp
    assert canary.connections == 0
    assert fake_api.requests == []


async def test_host_header_cannot_pick_the_upstream(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI, canary: Canary
) -> None:
    data = request_bytes("/v1/messages", body=body(), auth=token(), host=f"127.0.0.1:{canary.port}")
    resp = await raw_request(proxy.port, data)
    assert resp.status == 200
    assert canary.connections == 0
    [rec] = fake_api.requests
    assert rec.header("Host") == f"127.0.0.1:{fake_api.port}"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_upstream_redirects_are_never_followed(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI, canary: Canary, status: int
) -> None:
    fake_api.script(
        Reply(
            kind="redirect", status=status, location=f"http://127.0.0.1:{canary.port}/v1/messages"
        )
    )
    resp = await raw_request(proxy.port, request_bytes("/v1/messages", body=body(), auth=token()))
    assert resp.status == 502
    assert resp.json["error"]["type"] == "api_error"
    assert resp.header("Location") is None
    assert len(fake_api.requests) == 1
    assert canary.connections == 0


def smuggle(head: bytes) -> bytes:
    payload = body()
    return (
        b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        + f"Authorization: Bearer {token()}\r\n".encode()
        + b"content-type: application/json\r\n"
        + head
        + f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b"anthropic-beta: a\rx-api-key: evil\r\n", id="bare-CR-in-value"),
        pytest.param(b"anthropic-beta: a-2025-01-01,\r\n x-api-key: evil\r\n", id="obs-fold"),
        pytest.param(b"x-evil\r\n", id="no-colon"),
        pytest.param(b"anthropic-beta: a\x00b\r\n", id="NUL"),
        pytest.param(b"Transfer-Encoding: chunked\r\n", id="TE-and-CL"),
        pytest.param(b"Content-Length: 5\r\n", id="two-lengths"),
    ],
)
async def test_malformed_heads_are_refused_before_forwarding(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI, head: bytes
) -> None:
    conn = await RawConnection.open(proxy.port)
    conn.send(smuggle(head))
    reply = await conn.read_until_closed()
    conn.close()
    assert reply.startswith(b"HTTP/1.1 400 "), reply[:80]
    assert fake_api.requests == []


async def test_bare_lf_splits_headers_and_the_extra_one_is_dropped(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI
) -> None:
    conn = await RawConnection.open(proxy.port)
    conn.send(smuggle(b"anthropic-beta: a\nx-evil: 1\nx-api-key: evil\r\n"))
    reply = await conn.read_until_closed()
    conn.close()
    assert reply.startswith(b"HTTP/1.1 200 ")
    [rec] = fake_api.requests
    assert rec.header_values("anthropic-beta") == ["a"]
    assert rec.header("x-evil") is None
    assert rec.header_values("x-api-key") == [fake_api_key(fake_api)]
    for _, value in rec.headers:
        assert not {"\r", "\n", "\x00"} & set(value)


def fake_api_key(api: FakeAnthropicAPI) -> str:
    [key] = api.api_keys
    return key
