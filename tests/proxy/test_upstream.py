"""The upstream side: keep-alive connections are reused, a connection the upstream closed is
replaced without the client noticing, the configured path prefix is kept, and TLS
certificates are verified."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from claude_pods_proxy.app import ProxyServer
from tornado.iostream import IOStream

from tests.fakes.anthropic_api import FakeAnthropicAPI

from .conftest import MakeProxy
from .helpers import REAL_KEY, Canary, body, raw_request, request_bytes, token


async def send(proxy: ProxyServer, **kw: Any) -> Any:
    return await raw_request(
        proxy.port, request_bytes("/v1/messages", body=body(**kw), auth=token())
    )


async def test_upstream_connections_are_kept_alive(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI
) -> None:
    for stream in (False, True, False):
        assert (await send(proxy, stream=stream)).status == 200
    peers = {r.peer for r in fake_api.requests}
    assert len(peers) == 1, peers  # three requests, one upstream connection
    assert proxy.upstream.idle == 1


async def test_a_connection_closed_by_the_upstream_is_replaced(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI
) -> None:
    assert (await send(proxy)).status == 200
    await fake_api.drop_connections()  # what an upstream's keep-alive timeout does
    for _ in range(3):
        assert (await send(proxy)).status == 200
    assert len(fake_api.requests) == 4
    assert len({r.peer for r in fake_api.requests}) == 2


async def test_upstream_path_prefix_is_kept(
    make_proxy: MakeProxy, fake_api: FakeAnthropicAPI
) -> None:
    proxy = await make_proxy(upstream_url=fake_api.url + "/gateway/anthropic/")
    resp = await raw_request(
        proxy.port, request_bytes("/v1/messages?beta=true", body=body(), auth=token())
    )
    assert resp.status == 404  # the fake serves /v1 only: the prefix reached it
    assert [r.target for r in fake_api.requests] == ["/gateway/anthropic/v1/messages?beta=true"]


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[str, str]:
    if not shutil.which("openssl"):
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return str(cert), str(key)


@pytest.fixture
def tls_api(io_loop: Any, certificate: tuple[str, str]) -> Iterator[FakeAnthropicAPI]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    api = FakeAnthropicAPI((REAL_KEY,), ssl_context=context)
    io_loop.run_sync(api.start)
    yield api
    io_loop.run_sync(api.stop)


async def test_untrusted_upstream_certificate_is_refused(
    make_proxy: MakeProxy, tls_api: FakeAnthropicAPI
) -> None:
    proxy = await make_proxy(upstream_url=tls_api.url)
    resp = await send(proxy)
    assert resp.status == 502
    assert resp.json["error"]["type"] == "api_error"
    assert tls_api.requests == []


async def test_tls_upstream_with_a_trusted_certificate(
    make_proxy: MakeProxy,
    tls_api: FakeAnthropicAPI,
    certificate: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", certificate[0])  # the default trust store
    proxy = await make_proxy(upstream_url=tls_api.url)
    for stream in (False, True):
        resp = await send(proxy, stream=stream)
        assert resp.status == 200
    [first, second] = tls_api.requests
    assert first.header("x-api-key") == REAL_KEY
    assert first.header("Host") == f"127.0.0.1:{tls_api.port}"
    assert first.peer == second.peer  # kept alive over TLS too


@pytest.mark.parametrize(("reused", "status", "connects"), [(True, 200, 2), (False, 502, 1)])
async def test_only_a_dead_pooled_connection_is_retried(
    proxy: ProxyServer,
    fake_api: FakeAnthropicAPI,
    monkeypatch: pytest.MonkeyPatch,
    reused: bool,
    status: int,
    connects: int,
) -> None:
    """A pooled connection can die unnoticed (the upstream closed it while idle): the
    request never reached the upstream, so it goes out once more on a fresh connection.
    A fresh connection failing is a real failure and is not retried (POST is not
    idempotent)."""
    mine, peer = socket.socketpair()
    peer.close()
    calls: list[bool] = []
    real_connect = proxy.upstream.connect

    async def connect() -> tuple[IOStream, bool]:
        calls.append(True)
        if len(calls) == 1:
            return IOStream(mine), reused
        return await real_connect()

    monkeypatch.setattr(proxy.upstream, "connect", connect)
    resp = await send(proxy)
    assert resp.status == status
    assert len(calls) == connects
    assert len(fake_api.requests) == connects - 1


async def test_unreachable_upstream_is_a_502(make_proxy: MakeProxy, tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proxy = await make_proxy(upstream_url=f"http://127.0.0.1:{port}")
    resp = await send(proxy)
    assert resp.status == 502
    assert resp.json["error"]["message"] == "The upstream API is unreachable."


async def test_connect_timeout_covers_a_hanging_tls_handshake(make_proxy: MakeProxy) -> None:
    """The listener accepts TCP and then says nothing, so the TLS handshake never ends."""
    silent = await Canary(silent=True).start()
    proxy = await make_proxy(upstream_url=f"https://127.0.0.1:{silent.port}", connect_timeout=0.3)
    started = time.monotonic()
    resp = await send(proxy)
    elapsed = time.monotonic() - started
    assert resp.status == 504
    assert resp.json["error"]["type"] == "timeout_error"
    assert 0.3 <= elapsed < 3
    assert silent.connections == 1
    await silent.stop()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.1", "localhost.example"])
def test_the_fake_upstream_binds_loopback_only(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        FakeAnthropicAPI(host=host)
