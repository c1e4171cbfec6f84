"""Keep-alive connections to the one upstream origin.

The upstream client is Tornado's own HTTP/1.1 protocol class,
:class:`tornado.http1connection.HTTP1Connection`, in client mode (its documented use:
``write_headers``/``finish``, then ``read_response`` with a delegate), one per request,
over pooled ``IOStream`` connections from :class:`tornado.tcpclient.TCPClient`
(happy eyeballs, TLS with certificate and host name checks, connect timeout). Why not
a ready-made client (measured on the benchmark machine, see ``docs/benchmarks.md``):

* ``AsyncHTTPClient`` (``simple_httpclient``) opens a new connection per request
  (``no_keep_alive=True``), i.e. a TCP and TLS handshake on every turn of the CLI; an
  in-flight fetch cannot be cancelled through its API (a sandbox that disconnects would
  keep its generation running), and it has only a total ``request_timeout``;
* aiohttp fixes all three, but its per-request machinery costs ~0.11 ms more than the
  same exchange over ``HTTP1Connection``, a fifth of the proxy's latency budget.

This module owns what is left: reusing connections. A connection goes back to the pool
only after a complete response that did not ask to close it; idle connections are
watched (a close from the server drops them at once) and dropped after
``idle_timeout`` seconds, shorter than common server keep-alive timeouts. Should a
reused connection still turn out dead before any response byte, the caller retries
once on a fresh one (the server closed it idle, so it never saw the request).
"""

from __future__ import annotations

import asyncio
import datetime
import ssl
import time
import urllib.parse

from tornado.iostream import IOStream
from tornado.tcpclient import TCPClient

__all__ = ["UpstreamPool"]


class UpstreamPool:
    """Connections to ``base_url``'s origin (scheme, host, port)."""

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout: float,
        max_connections: int,
        max_idle: int = 128,
        idle_timeout: float = 20.0,
    ) -> None:
        parts = urllib.parse.urlsplit(base_url)
        assert parts.hostname is not None
        self.host = parts.hostname
        self.tls = parts.scheme == "https"
        self.port = parts.port or (443 if self.tls else 80)
        #: The Host header: the configured authority, never the client's.
        self.authority = parts.netloc
        #: Fixed path prefix of the base URL ("" for https://api.anthropic.com).
        self.prefix = parts.path
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self._ssl = ssl.create_default_context() if self.tls else None
        self._tcp = TCPClient()
        self._idle: list[tuple[IOStream, float]] = []
        #: Held for the whole of each upstream exchange (``max_connections`` at once).
        self.slots = asyncio.Semaphore(max_connections)

    async def connect(self) -> tuple[IOStream, bool]:
        """An open connection and whether it was reused from the pool."""
        now = time.monotonic()
        while self._idle:
            stream, since = self._idle.pop()
            if stream.closed():
                continue
            if now - since > self.idle_timeout:
                stream.close()
                continue
            stream.set_close_callback(None)
            return stream, True
        stream = await self._tcp.connect(
            self.host,
            self.port,
            ssl_options=self._ssl,
            timeout=datetime.timedelta(seconds=self.connect_timeout),
        )
        stream.set_nodelay(True)
        return stream, False

    def release(self, stream: IOStream) -> None:
        """Return a connection whose last response was read completely."""
        if stream.closed():
            return
        if len(self._idle) >= self.max_idle:
            stream.close()
            return
        # A close callback makes the stream watch for the server hanging up while idle.
        stream.set_close_callback(lambda: self._forget(stream))
        self._idle.append((stream, time.monotonic()))

    def _forget(self, stream: IOStream) -> None:
        self._idle = [(s, t) for s, t in self._idle if s is not stream]

    @property
    def idle(self) -> int:
        return len(self._idle)

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for stream, _ in idle:
            stream.set_close_callback(None)
            stream.close()
        self._tcp.close()
