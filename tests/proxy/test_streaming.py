"""Streaming: SSE goes through chunk by chunk (pings included), streams are limited by a stall
timeout and not by a total one, a client that goes away cancels the upstream request, and
request bodies are capped."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from claude_pods_proxy.app import ProxyServer

from tests.fakes.anthropic_api import FakeAnthropicAPI, Reply

from .helpers import REAL_KEY, RawConnection, body, raw_request, request_bytes, token


async def open_stream(port: int, payload: bytes | None = None) -> tuple[RawConnection, Any]:
    conn = await RawConnection.open(port)
    conn.send(
        request_bytes("/v1/messages?beta=true", body=payload or body(stream=True), auth=token())
    )
    head = await asyncio.wait_for(conn.read_head(), 10)
    return conn, head


async def read_events(
    conn: RawConnection, n: int, buffered: bytes = b""
) -> tuple[list[str], bytes]:
    """Read chunks until *n* complete SSE events arrived; returns their names and leftovers."""
    data = buffered
    while data.count(b"\n\n") < n:
        chunk = await asyncio.wait_for(conn.read_chunk(), 10)
        assert chunk, "stream ended early"
        data += chunk
    *events, rest = data.split(b"\n\n", n)
    names = [e.split(b"\n")[0].removeprefix(b"event: ").decode() for e in events]
    return names, rest


async def read_to_end(conn: RawConnection) -> bytes:
    parts = []
    while chunk := await asyncio.wait_for(conn.read_chunk(), 10):
        parts.append(chunk)
    return b"".join(parts)


async def test_events_arrive_while_the_upstream_is_still_generating(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI
) -> None:
    fake_api.script(Reply(stall_after=3, pings=1))
    conn, head = await open_stream(proxy.port)
    assert head.status == 200
    names, rest = await read_events(conn, 3)
    # The upstream is blocked before its 4th event, yet the first three, ping included,
    # are already here: nothing is buffered.
    assert names == ["message_start", "content_block_start", "ping"]
    assert fake_api.in_flight == 1
    fake_api.release()
    names, _ = await read_events(conn, 6, rest)
    assert names[-1] == "message_stop"
    assert await read_to_end(conn) == b""
    conn.close()


async def test_stream_bytes_are_identical_to_a_direct_call(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI
) -> None:
    fake_api.script(Reply(kind="tool_use", chunks=5), Reply(kind="tool_use", chunks=5))
    direct = await raw_request(
        fake_api.port,
        request_bytes(
            "/v1/messages",
            body=body(stream=True),
            headers=[("x-api-key", REAL_KEY), ("anthropic-version", "2023-06-01")],
        ),
    )
    proxied = await raw_request(
        proxy.port, request_bytes("/v1/messages", body=body(stream=True), auth=token())
    )
    assert proxied.status == direct.status == 200
    assert b"input_json_delta" in proxied.body
    assert proxied.body == direct.body.replace(b"000001", b"000002")


@pytest.mark.parametrize("proxy_options", [{"stall_timeout": 0.3, "connect_timeout": 0.2}])
async def test_a_stream_may_outlast_every_timeout_while_bytes_flow(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI
) -> None:
    fake_api.script(Reply(text="ab" * 12, chunks=12, delay=0.1, pings=2))
    started = time.monotonic()
    resp = await raw_request(
        proxy.port, request_bytes("/v1/messages", body=body(stream=True), auth=token())
    )
    elapsed = time.monotonic() - started
    assert resp.status == 200
    assert resp.body.count(b"event: content_block_delta") == 12
    assert resp.body.endswith(b'data: {"type":"message_stop"}\n\n')
    assert elapsed > 5 * 0.3  # much longer than the stall timeout, and it completed


@pytest.mark.parametrize("proxy_options", [{"stall_timeout": 0.3}])
async def test_a_stalled_stream_ends_with_an_error_event(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI, access_lines: list[str]
) -> None:
    fake_api.script(Reply(stall_after=3))
    started = time.monotonic()
    conn, head = await open_stream(proxy.port)
    assert head.status == 200
    data = await read_to_end(conn)  # ends cleanly (terminating chunk), no hang
    elapsed = time.monotonic() - started
    conn.close()
    events = data.split(b"\n\n")
    assert events[-2].startswith(b"event: error\n")
    error = json.loads(events[-2].split(b"data: ", 1)[1])
    assert error["error"]["type"] == "timeout_error"
    assert 0.3 <= elapsed < 5
    await fake_api.wait_disconnects(1)  # the proxy closed the upstream connection
    log = json.loads(access_lines[-1])
    assert log["outcome"] == "upstream_stall"
    assert log["input_tokens"] == 25  # from message_start
    assert log["usage_estimated"] is True


async def test_upstream_dropping_before_any_event_is_a_502(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI
) -> None:
    fake_api.script(Reply(drop_after=0))
    resp = await raw_request(
        proxy.port, request_bytes("/v1/messages", body=body(stream=True), auth=token())
    )
    assert resp.status == 502
    assert resp.json["error"]["type"] == "api_error"


@pytest.mark.parametrize("proxy_options", [{"stall_timeout": 0.3}])
async def test_no_response_head_within_the_stall_timeout_is_a_504(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI
) -> None:
    fake_api.script(Reply(stall_before_headers=True))
    resp = await raw_request(
        proxy.port, request_bytes("/v1/messages", body=body(stream=True), auth=token())
    )
    assert resp.status == 504
    assert resp.json["error"]["type"] == "timeout_error"
    await fake_api.wait_disconnects(1)


async def test_upstream_dropping_mid_stream_ends_with_an_error_event(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI
) -> None:
    # Spaced events: Tornado hands over the bytes that arrive in the same read as an
    # abrupt close together with the error, i.e. not at all; spaced, they are forwarded.
    fake_api.script(Reply(drop_after=4, delay=0.02))
    conn, _ = await open_stream(proxy.port)
    data = await read_to_end(conn)
    conn.close()
    names = [e.split(b"\n")[0] for e in data.split(b"\n\n") if e]
    assert names == [
        b"event: message_start",
        b"event: content_block_start",
        b"event: ping",
        b"event: content_block_delta",
        b"event: error",
    ]
    assert b'"api_error"' in data


async def test_upstream_error_events_pass_through(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI, access_lines: list[str]
) -> None:
    fake_api.script(Reply(stream_error="overloaded_error"))
    resp = await raw_request(
        proxy.port, request_bytes("/v1/messages", body=body(stream=True), auth=token())
    )
    assert resp.status == 200
    assert resp.body.endswith(
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error",'
        b'"message":"Overloaded"}}\n\n'
    )
    assert json.loads(access_lines[-1])["stream_error"] == "overloaded_error"


@pytest.mark.parametrize("stall", ["after_head", "before_head"])
async def test_client_disconnect_cancels_the_upstream_request(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI, access_lines: list[str], stall: str
) -> None:
    if stall == "after_head":
        fake_api.script(Reply(stall_after=3))
    else:
        fake_api.script(Reply(stall_before_headers=True))
    conn = await RawConnection.open(proxy.port)
    conn.send(request_bytes("/v1/messages", body=body(stream=True), auth=token()))
    if stall == "after_head":
        await conn.read_head()
        await read_events(conn, 1)
    else:
        await fake_api.wait_requests(1)
    assert fake_api.disconnects == 0
    conn.close()
    started = time.monotonic()
    await fake_api.wait_disconnects(1, timeout=5)
    assert time.monotonic() - started < 2
    await proxy.wait_idle(5)
    assert proxy.active == {}
    log = json.loads(access_lines[-1])
    assert log["outcome"] == "client_disconnect"
    assert log["session"] == "sess-1"
    # Cut short: still charged (input from message_start, or the prompt size estimate).
    assert log["usage_estimated"] is True
    assert log["input_tokens"] > 0
    assert proxy.store.sessions["sess-1"].input_tokens == log["input_tokens"]


async def test_many_concurrent_streams(proxy: ProxyServer, fake_api: FakeAnthropicAPI) -> None:
    async def one(i: int) -> bytes:
        data = request_bytes("/v1/messages", body=body(stream=True), auth=token(session=f"s{i}"))
        resp = await raw_request(proxy.port, data)
        assert resp.status == 200
        return resp.body

    bodies = await asyncio.gather(*(one(i) for i in range(40)))
    assert all(b.endswith(b'data: {"type":"message_stop"}\n\n') for b in bodies)
    assert len(fake_api.requests) == 40


# --------------------------------------------------------------------- body size


@pytest.mark.parametrize("proxy_options", [{"max_body_bytes": 1000}])
async def test_body_at_the_limit_is_forwarded(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI
) -> None:
    payload = body()
    payload = payload[:-1] + b" " * (1000 - len(payload)) + b"}"
    assert len(payload) == 1000
    resp = await raw_request(proxy.port, request_bytes("/v1/messages", body=payload, auth=token()))
    assert resp.status == 200
    assert fake_api.requests[0].body == payload


@pytest.mark.parametrize("proxy_options", [{"max_body_bytes": 1000}])
async def test_declared_oversize_body_is_refused_before_it_is_read(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI
) -> None:
    conn = await RawConnection.open(proxy.port)
    head = request_bytes("/v1/messages", body=b"", auth=token()).replace(
        b"Content-Length: 0", b"Content-Length: 1001"
    )
    conn.send(head)  # no body sent at all: the answer must not wait for it
    resp = await asyncio.wait_for(conn.read_response(), 5)
    assert resp.status == 413
    assert resp.json["error"]["type"] == "request_too_large"
    assert await conn.read_until_closed() == b""  # and the connection is closed
    conn.close()
    assert fake_api.requests == []


async def test_default_limit_is_32_mib(proxy: ProxyServer, fake_api: FakeAnthropicAPI) -> None:
    conn = await RawConnection.open(proxy.port)
    head = request_bytes("/v1/messages", body=b"", auth=token()).replace(
        b"Content-Length: 0", f"Content-Length: {32 * 1024 * 1024 + 1}".encode()
    )
    conn.send(head)
    resp = await asyncio.wait_for(conn.read_response(), 5)
    conn.close()
    assert resp.status == 413
    assert fake_api.requests == []


@pytest.mark.parametrize("proxy_options", [{"max_body_bytes": 1000}])
async def test_chunked_oversize_body_is_refused(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI
) -> None:
    conn = await RawConnection.open(proxy.port)
    head = (
        "POST /v1/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        f"Authorization: Bearer {token()}\r\ncontent-type: application/json\r\n\r\n"
    ).encode()
    chunk = b"x" * 600
    conn.send(head + b"258\r\n" + chunk + b"\r\n" + b"258\r\n" + chunk + b"\r\n")
    resp = await asyncio.wait_for(conn.read_response(), 5)
    conn.close()
    assert resp.status == 413
    assert fake_api.requests == []
