"""Header handling: the client's credentials and hop-by-hop headers never go upstream, the real
key is injected, API headers are forwarded verbatim, and upstream statuses, error bodies and
``request-id``/rate-limit headers come back unchanged."""

from __future__ import annotations

import json

import pytest
from claude_pods_proxy.app import ProxyServer

from tests.fakes.anthropic_api import FakeAnthropicAPI, Reply

from .helpers import REAL_KEY, body, raw_request, request_bytes, token

BETAS = "claude-code-20250219,context-1m-2025-08-07,interleaved-thinking-2025-05-14"
CLIENT_HEADERS = [
    ("anthropic-version", "2023-06-01"),
    ("anthropic-beta", BETAS),
    ("content-type", "application/json"),
    ("accept", "application/json"),
    ("user-agent", "claude-cli/2.1.197 (external, sdk-cli)"),
    ("x-app", "cli"),
    ("X-Claude-Code-Session-Id", "0b4c5b3e-8f4e-4d1c-9a53-2f1c7e1d9a10"),
    ("X-Stainless-Retry-Count", "0"),
    ("X-Stainless-Timeout", "600"),
    ("anthropic-dangerous-direct-browser-access", "true"),
    # must all be dropped
    ("x-api-key", "sk-ant-api03-ATTACKER-KEY"),
    ("Cookie", "session=abc"),
    ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
    ("Connection", "keep-alive, x-hop"),
    ("x-hop", "1"),
    ("Keep-Alive", "timeout=5"),
    ("TE", "trailers"),
    ("Upgrade", "h2c"),
    ("X-Forwarded-For", "10.0.0.66"),
    ("X-Forwarded-Host", "evil.example"),
    ("Forwarded", "for=10.0.0.66;host=evil.example"),
    ("Accept-Encoding", "gzip, br"),
    ("x-custom", "nope"),
]
FORWARDED = {
    "anthropic-version",
    "anthropic-beta",
    "content-type",
    "accept",
    "user-agent",
    "x-app",
    "x-claude-code-session-id",
    "x-stainless-retry-count",
    "x-stainless-timeout",
    "anthropic-dangerous-direct-browser-access",
}
ADDED_BY_PROXY = {"host", "x-api-key", "accept-encoding", "content-length"}


async def test_request_headers_are_filtered_and_the_real_key_injected(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI
) -> None:
    session_token = token()
    payload = body(stream=False)
    data = request_bytes(
        "/v1/messages?beta=true", body=payload, auth=session_token, headers=CLIENT_HEADERS
    )
    resp = await raw_request(proxy.port, data)
    assert resp.status == 200
    [rec] = fake_api.requests
    names = {name.lower() for name, _ in rec.headers}
    assert names == FORWARDED | ADDED_BY_PROXY
    assert rec.header_values("x-api-key") == [REAL_KEY]
    assert rec.header("anthropic-beta") == BETAS
    assert rec.header("anthropic-version") == "2023-06-01"
    assert rec.header("x-claude-code-session-id") == "0b4c5b3e-8f4e-4d1c-9a53-2f1c7e1d9a10"
    assert rec.header("accept-encoding") == "identity"
    assert rec.body == payload
    for _, value in rec.headers:
        assert session_token not in value
        assert "ATTACKER" not in value


async def test_token_in_x_api_key_is_accepted_and_replaced(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI
) -> None:
    """SDK clients configured with the token as their "API key" send it as x-api-key."""
    session_token = token()
    data = request_bytes(
        "/v1/messages",
        body=body(),
        headers=[("x-api-key", session_token), ("anthropic-version", "2023-06-01")],
    )
    resp = await raw_request(proxy.port, data)
    assert resp.status == 200
    assert fake_api.requests[0].header_values("x-api-key") == [REAL_KEY]


async def test_repeated_beta_headers_are_all_forwarded(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI
) -> None:
    headers = [("anthropic-beta", "a-2025-01-01"), ("anthropic-beta", "b-2025-02-02")]
    resp = await raw_request(
        proxy.port, request_bytes("/v1/messages", body=body(), auth=token(), headers=headers)
    )
    assert resp.status == 200
    values = fake_api.requests[0].header_values("anthropic-beta")
    assert ",".join(v.strip() for v in values) == "a-2025-01-01,b-2025-02-02"


async def test_response_headers_pass_through_minus_hop_by_hop(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI
) -> None:
    fake_api.script(
        Reply(
            headers={
                "retry-after": "7",
                "x-should-retry": "true",
                "anthropic-ratelimit-tokens-remaining": "123000",
                "Set-Cookie": "__cf_bm=abc; path=/",
                "Connection": "x-hop-resp",
                "x-hop-resp": "1",
                "x-custom-upstream": "kept",
            }
        )
    )
    resp = await raw_request(proxy.port, request_bytes("/v1/messages", body=body(), auth=token()))
    assert resp.status == 200
    assert resp.header("request-id") == "req_fake_000001"
    assert resp.header("anthropic-ratelimit-requests-limit") == "4000"
    assert resp.header("anthropic-ratelimit-requests-remaining") == "3999"
    assert resp.header("anthropic-ratelimit-requests-reset") == "2026-11-26T00:00:01Z"
    assert resp.header("anthropic-ratelimit-tokens-remaining") == "123000"
    assert resp.header("retry-after") == "7"
    assert resp.header("x-should-retry") == "true"
    assert resp.header("x-custom-upstream") == "kept"
    assert resp.header("content-type") == "application/json"
    names = resp.header_names()
    assert not {"set-cookie", "x-hop-resp", "anthropic-organization-id"} & names
    assert resp.header("content-length") == str(len(resp.body))


@pytest.mark.parametrize(
    ("status", "error_type", "extra"),
    [
        (400, "invalid_request_error", {}),
        (401, "authentication_error", {}),
        (403, "permission_error", {}),
        (404, "not_found_error", {}),
        (413, "request_too_large", {}),
        (429, "rate_limit_error", {"retry-after": "11"}),
        (500, "api_error", {}),
        (529, "overloaded_error", {"x-should-retry": "true"}),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_errors_pass_through_unchanged(
    proxy: ProxyServer,
    fake_api: FakeAnthropicAPI,
    status: int,
    error_type: str,
    extra: dict[str, str],
    stream: bool,
) -> None:
    message = f"upstream says {status}: keep this wording"
    fake_api.script(Reply(kind="error", status=status, error_message=message, headers=extra))
    resp = await raw_request(
        proxy.port, request_bytes("/v1/messages?beta=true", body=body(stream=stream), auth=token())
    )
    expected = {
        "type": "error",
        "error": {"type": error_type, "message": message},
        "request_id": "req_fake_000001",
    }
    assert resp.status == status
    assert resp.body == json.dumps(expected).encode()  # byte for byte
    assert resp.header("request-id") == "req_fake_000001"
    for name, value in extra.items():
        assert resp.header(name) == value
    if status == 529:
        assert resp.reason == "Unknown"  # no standard phrase; the status code is what counts


async def test_streaming_reply_keeps_its_content_type(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI
) -> None:
    resp = await raw_request(
        proxy.port, request_bytes("/v1/messages?beta=true", body=body(stream=True), auth=token())
    )
    assert resp.status == 200
    assert resp.header("content-type") == "text/event-stream; charset=utf-8"
    assert resp.header("cache-control") == "no-cache"
    assert resp.header("transfer-encoding") == "chunked"
    assert resp.body.startswith(b"event: message_start\n")
    assert resp.body.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
