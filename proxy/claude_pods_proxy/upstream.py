"""Forwarding one Messages API request: from the sandbox's connection to the upstream and back.

:class:`ForwardRequest` is a Tornado ``HTTPMessageDelegate`` rather than a
``RequestHandler``: these two routes are the hot path, and the delegate sees the raw
request head, decides on authentication before buffering a byte of body, and writes
the reply head and SSE chunks straight to the connection (a ``RequestHandler`` adds
per-request machinery we do not use here).

Upstream, each request is one :class:`tornado.http1connection.HTTP1Connection` in client
mode on a pooled keep-alive connection (see :mod:`.pool` for why not
``AsyncHTTPClient`` or aiohttp). Its delegate, :class:`_UpstreamReply`, hands the reply
over as it arrives:

* SSE replies go to the client as they arrive, the first bytes in the same write as the
  head. Tornado hands over everything that has already arrived when it would otherwise
  wait for the network (consecutive chunks in its buffer are merged, it never waits for
  more), so events that arrive together leave together. When the client cannot keep
  up, the returned write future pauses reading from the upstream (back-pressure, not
  buffering);
* other replies (JSON, errors) are collected and written in one piece, byte for byte;
* a 3xx is never followed: it becomes a 502 and the connection is closed;
* no total timeout: a watchdog closes the exchange after ``stall_timeout`` seconds
  without a byte from the upstream (streams may run for many minutes);
* cancelling the request (client gone, session revoked, shutdown) closes the upstream
  connection, which ends the generation.

The request line is a constant per route (``beta=true`` is the only query kept), Host is
the configured upstream's, and only an allowlist of client headers is copied: nothing
in the client's request target or headers chooses where the request goes. The proxy
asks for ``Accept-Encoding: identity`` so usage can be read from plain JSON/SSE.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import math
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from tornado import httputil
from tornado.concurrent import Future
from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters
from tornado.iostream import IOStream, StreamClosedError

from .errors import error_body, new_request_id, sse_error_event
from .limits import Refusal
from .pricing import cost_usd
from .usage import SseUsageParser, Usage, usage_from_message

if TYPE_CHECKING:
    from .app import ProxyServer
    from .tokens import TokenClaims

__all__ = ["ROUTES", "ForwardRequest", "Reply"]

#: The only paths ever forwarded (POST only), and their route names.
ROUTES = {"/v1/messages": "messages", "/v1/messages/count_tokens": "count_tokens"}
ROUTE_PATHS = {route: path for path, route in ROUTES.items()}

#: Upstream connection parameters: keep-alive, no decompression, no total timeouts
#: (the stall watchdog covers silence), and no size cap a long stream could reach.
UPSTREAM_PARAMS = HTTP1ConnectionParameters(
    no_keep_alive=False,
    chunk_size=64 * 1024,
    max_header_size=64 * 1024,
    max_body_size=1 << 40,
    decompress=False,
)

#: Request headers passed upstream; everything else (auth, cookies, hop-by-hop,
#: Host, Content-Length, proxies' X-Forwarded-*) is dropped.
FORWARDED_REQUEST_HEADERS = frozenset(
    {
        "anthropic-version",
        "anthropic-beta",
        "content-type",
        "accept",
        "user-agent",
        "x-app",
        "anthropic-dangerous-direct-browser-access",
    }
)
FORWARDED_REQUEST_PREFIXES = ("x-stainless-", "x-claude-code-")

#: Response headers never passed back: hop-by-hop ones (RFC 9110 7.6.1), the length
#: (Tornado frames the reply itself), cookies, the organization id (not the sandbox
#: user's business) and Location (redirects are refused).
DROPPED_RESPONSE_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "set-cookie",
        "anthropic-organization-id",
        "location",
    }
)

# Outcomes (access log ``outcome`` field and rejection metric reasons).
OK = "ok"
CLIENT_GONE = "client_disconnect"
REVOKED = "revoked"
SHUTDOWN = "shutdown"
STALLED = "upstream_stall"
BROKEN = "upstream_broken"


class Reply:
    """A complete reply the proxy writes itself."""

    __slots__ = ("body", "code", "headers", "reason", "status")

    def __init__(
        self,
        status: int,
        error_type: str,
        message: str,
        *,
        code: str | None = None,
        retry: bool | None = None,
        retry_after: int | None = None,
    ) -> None:
        rid = new_request_id()
        self.status = status
        self.reason = _reason(status)
        #: Why the proxy answered itself (access log ``outcome``, rejection metric label).
        self.code = code
        self.body = error_body(error_type, message, rid)
        self.headers = httputil.HTTPHeaders({"Content-Type": "application/json", "request-id": rid})
        if retry is not None:
            self.headers["x-should-retry"] = "true" if retry else "false"
        if retry_after is not None:
            self.headers["retry-after"] = str(retry_after)


def unauthorized(message: str, code: str = "auth") -> Reply:
    return Reply(401, "authentication_error", message, code=code, retry=False)


def refused(refusal: Refusal, *, retry: bool = False) -> Reply:
    return Reply(
        429,
        "rate_limit_error",
        refusal.message,
        code=refusal.reason,
        retry=retry,
        retry_after=refusal.retry_after,
    )


def wants_beta(query: str) -> bool:
    """True if the query string has ``beta=true`` (the only query the proxy forwards)."""
    return bool(query) and ("beta", "true") in parse_qsl(query, keep_blank_values=True)


class ForwardRequest(httputil.HTTPMessageDelegate):
    """One ``POST /v1/messages[/count_tokens]``: authenticate, admit, forward, account."""

    def __init__(
        self, proxy: ProxyServer, conn: httputil.HTTPConnection, route: str, query: str
    ) -> None:
        assert isinstance(conn, HTTP1Connection)  # the server speaks HTTP/1.x only
        self.proxy = proxy
        self.conn = conn
        self.route = route
        self.beta = wants_beta(query)
        self.request_headers = httputil.HTTPHeaders()
        self.started = time.perf_counter()
        self.claims: TokenClaims | None = None
        self.reply: Reply | None = None
        self.chunks: list[bytes] = []
        self.received = 0
        self.body_bytes = 0
        self.too_large = False
        self.task: asyncio.Task[None] | None = None
        self.cancel_reason: str | None = None
        self.head_sent = False
        # what the access log and the accounting need
        self.status = 0
        self.request_id: str | None = None
        self.model: str | None = None
        self.usage: Usage | None = None
        self.outcome = OK
        self.refusal_reason: str | None = None
        self.streamed = False
        self.forwarded = False
        self.first_byte: float | None = None
        self.bytes_out = 0
        self.stream_error: str | None = None
        self.parser: SseUsageParser | None = None
        # the upstream exchange
        self.upstream_stream: IOStream | None = None
        self.last_activity = 0.0
        self.stalled = False
        self.client_closed = False
        self.redirected = False
        self._watchdog: asyncio.TimerHandle | None = None
        self._pending_head: tuple[int, str, httputil.HTTPHeaders] | None = None
        self._head_timer: asyncio.Handle | None = None
        self._buffered: tuple[int, str, httputil.HTTPHeaders, list[bytes]] | None = None

    # ------------------------------------------------------------ request from the client

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> None:
        proxy = self.proxy
        self.request_headers = headers
        length = headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > proxy.config.max_body_bytes:
            self._body_too_large()
            return
        self.claims, self.reply = proxy.authenticate(headers)

    def data_received(self, chunk: bytes) -> None:
        if self.too_large:
            return
        self.received += len(chunk)
        if self.received > self.proxy.config.max_body_bytes:
            self._body_too_large()
        elif self.reply is None:
            self.chunks.append(chunk)

    def _body_too_large(self) -> None:
        """Answer 413 at once; Tornado then closes the connection (the body is unread)."""
        self.too_large = True
        self.chunks = []
        limit = self.proxy.config.max_body_bytes
        self._write_reply(
            Reply(
                413,
                "request_too_large",
                f"Request exceeds the {limit} byte limit.",
                code="body_too_large",
                retry=False,
            )
        )
        self.proxy.request_done(self)

    def finish(self) -> None:
        if self.too_large:
            return
        if self.reply is not None:
            self._write_reply(self.reply)
            self.proxy.request_done(self)
            return
        # Registered now, not in the task: the client may go away before it starts.
        self.conn.set_close_callback(self._client_gone)
        self.task = asyncio.ensure_future(self._run())

    def on_connection_close(self) -> None:
        """The client went away while sending the request: nothing was forwarded."""
        self.chunks = []

    def _client_gone(self) -> None:
        self.cancel(CLIENT_GONE)

    def cancel(self, reason: str) -> None:
        """Stop this request (client gone, session revoked, shutdown); closes the upstream."""
        if self.task is not None and not self.task.done() and self.cancel_reason is None:
            self.cancel_reason = reason
            self.task.cancel()

    # ------------------------------------------------------------ forwarding

    async def _run(self) -> None:
        proxy = self.proxy
        body = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        self.chunks = []
        self.body_bytes = len(body)
        admitted = False
        try:
            reply = proxy.check_body(self, body)
            if reply is None:
                reply = proxy.admit(self)
            if reply is not None:
                self._write_reply(reply)
                return
            admitted = True
            await self._forward(body)
        except asyncio.CancelledError:
            self._cancelled()
        except Exception:
            proxy.log.exception("forwarding failed")
            self.outcome = BROKEN
            self._fail_mid_reply(500, "api_error", "The proxy failed while forwarding the request.")
        finally:
            if admitted:
                proxy.release(self)
            proxy.request_done(self)

    def _upstream_request(
        self, body: bytes
    ) -> tuple[httputil.RequestStartLine, httputil.HTTPHeaders]:
        """The request line and headers sent upstream: fixed target, filtered headers, real key."""
        pool = self.proxy.upstream
        target = pool.prefix + ROUTE_PATHS[self.route] + ("?beta=true" if self.beta else "")
        headers = httputil.HTTPHeaders()
        for name, value in self.request_headers.get_all():
            lower = name.lower()
            if lower in FORWARDED_REQUEST_HEADERS or lower.startswith(FORWARDED_REQUEST_PREFIXES):
                if name in headers:
                    headers.add(name, value)
                else:
                    headers[name] = value
        headers["Host"] = pool.authority
        headers["X-Api-Key"] = self.proxy.keys.get()
        headers["Accept-Encoding"] = "identity"
        headers["Content-Length"] = str(len(body))
        return httputil.RequestStartLine("POST", target, "HTTP/1.1"), headers

    async def _forward(self, body: bytes) -> None:
        proxy = self.proxy
        pool = proxy.upstream
        self.forwarded = True
        start_line, headers = self._upstream_request(body)
        async with pool.slots:
            for attempt in (1, 2):
                try:
                    stream, reused = await pool.connect()
                except (asyncio.TimeoutError, TimeoutError):
                    proxy.metrics.upstream_errors.labels("connect").inc()
                    self.outcome = STALLED
                    self._write_reply(
                        Reply(504, "timeout_error", "The upstream API did not answer.")
                    )
                    return
                except (OSError, StreamClosedError) as e:
                    proxy.metrics.upstream_errors.labels("connect").inc()
                    proxy.log.warning("cannot connect to the upstream: %s", type(e).__name__)
                    self.outcome = BROKEN
                    self._write_reply(Reply(502, "api_error", "The upstream API is unreachable."))
                    return
                reply = _UpstreamReply(self)
                self.upstream_stream = stream
                ok = False
                self._watch_stall()
                try:
                    conn = HTTP1Connection(stream, True, UPSTREAM_PARAMS)
                    conn.write_headers(start_line, headers, body)
                    conn.finish()
                    ok = await conn.read_response(reply)
                except StreamClosedError:
                    ok = False
                finally:
                    self._stop_watch()
                    if ok and reply.done and reply.keep_alive and not stream.closed():
                        pool.release(stream)
                    else:
                        stream.close()  # never reuse a half-read connection; cancels the work
                    self.upstream_stream = None
                if reply.done:
                    if self.streamed:
                        self._take_stream_usage()
                    return
                if self.client_closed:
                    self._client_went_away()
                    return
                if self.stalled:
                    proxy.metrics.upstream_errors.labels("stall").inc()
                    self.outcome = STALLED
                    self._fail_mid_reply(
                        504, "timeout_error", "The upstream API stopped sending data."
                    )
                    return
                if reused and not reply.head_seen and attempt == 1:
                    continue  # a pooled connection the server had closed: it never saw us
                proxy.metrics.upstream_errors.labels("broken").inc()
                self.outcome = BROKEN
                self._fail_mid_reply(502, "api_error", "The upstream API connection broke.")
                return

    def _watch_stall(self) -> None:
        """Arm the stall watchdog: time *between* upstream bytes, not the whole exchange."""
        loop = asyncio.get_running_loop()
        self.last_activity = loop.time()
        deadline = self.last_activity + self.proxy.config.stall_timeout
        self._watchdog = loop.call_at(deadline, self._check_stall)

    def _check_stall(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = self.last_activity + self.proxy.config.stall_timeout
        if loop.time() < deadline:
            self._watchdog = loop.call_at(deadline, self._check_stall)
            return
        self._watchdog = None
        self.stalled = True
        if self.upstream_stream is not None:
            self.upstream_stream.close()

    def _stop_watch(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    # ------------------------------------------------------------ the upstream's reply

    def upstream_head(
        self, start_line: httputil.ResponseStartLine, headers: httputil.HTTPHeaders
    ) -> None:
        proxy = self.proxy
        self.last_activity = asyncio.get_running_loop().time()
        status = start_line.code
        if status < 200:
            return  # an interim 1xx head; the real one follows
        proxy.metrics.upstream_headers.observe(time.perf_counter() - self.started)
        self.request_id = headers.get("request-id")
        if 300 <= status < 400:
            self.redirected = True
            self.outcome = "upstream_redirect"
            proxy.log.warning("upstream answered %d with a redirect; not followed", status)
            self._write_reply(Reply(502, "api_error", "The upstream API answered with a redirect."))
            return
        out = _response_headers(headers)
        reason = start_line.reason or _reason(status)
        if headers.get("Content-Type", "").startswith("text/event-stream"):
            self.streamed = True
            self.parser = SseUsageParser()
            # The head goes out with the first chunk if that is already here (one write,
            # one wake-up of the client), else on the next loop turn.
            self._pending_head = (status, reason, out)
            loop = asyncio.get_running_loop()
            self._head_timer = loop.call_soon(self._send_pending_head)
        else:
            self._buffered = (status, reason, out, [])

    def _send_pending_head(self, chunk: bytes = b"") -> Future[None] | None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        head = self._pending_head
        self._pending_head = None
        if head is None:
            return None
        return self._write_head(*head, chunk)

    def upstream_data(self, chunk: bytes) -> Awaitable[None] | None:
        self.last_activity = asyncio.get_running_loop().time()
        if self.redirected:
            return None
        if self._buffered is not None:
            self._buffered[3].append(chunk)
            return None
        self.bytes_out += len(chunk)
        if self._pending_head is not None:
            written = self._send_pending_head(chunk)
        else:
            written = self.conn.write(chunk)
        assert self.parser is not None
        self.parser.feed(chunk)  # after the write: accounting never delays a byte
        if written is None or (written.done() and written.exception() is None):
            return None
        return self._drain(written)  # a slow client slows the upstream read (back-pressure)

    async def _drain(self, written: Future[None]) -> None:
        try:
            await written
        except StreamClosedError:
            self.client_closed = True
            if self.upstream_stream is not None:
                self.upstream_stream.close()
        self.last_activity = asyncio.get_running_loop().time()

    def upstream_finish(self) -> None:
        if self.redirected:
            return
        if self._buffered is not None:
            status, reason, headers, chunks = self._buffered
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            self._write_full(status, reason, headers, data)
            if status == 200 and self.route == "messages":
                self.model, self.usage = usage_from_message(data)
        else:
            if self._pending_head is not None:
                self._send_pending_head()
            self.conn.finish()

    def _take_stream_usage(self) -> None:
        parser = self.parser
        if parser is not None:
            self.model = parser.model or self.model
            self.usage = parser.result()
            self.stream_error = parser.error_type

    # ------------------------------------------------------------ writing to the client

    def _write_head(
        self, status: int, reason: str | None, headers: httputil.HTTPHeaders, chunk: bytes = b""
    ) -> Future[None]:
        self.status = status
        self.head_sent = True
        self.first_byte = time.perf_counter()
        start = httputil.ResponseStartLine("HTTP/1.1", status, reason or _reason(status))
        return self.conn.write_headers(start, headers, chunk or None)

    def _write_full(
        self, status: int, reason: str | None, headers: httputil.HTTPHeaders, body: bytes
    ) -> None:
        headers["Content-Length"] = str(len(body))
        self.bytes_out += len(body)
        self._write_head(status, reason, headers, body)
        self.conn.finish()

    def _write_reply(self, reply: Reply) -> None:
        if reply.code is not None and self.refusal_reason is None:
            self.refusal_reason = reply.code
        self.request_id = self.request_id or reply.headers["request-id"]
        with contextlib.suppress(StreamClosedError):
            self._write_full(reply.status, reply.reason, reply.headers, reply.body)

    def _fail_mid_reply(self, status: int, error_type: str, message: str) -> None:
        """End the reply after a failure, as cleanly as the bytes already sent allow."""
        self._take_stream_usage()
        self._buffered = None
        if self._pending_head is not None:  # nothing sent yet: a plain error reply fits
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            self._pending_head = None
        stream = self.conn.stream
        if stream is None or stream.closed():  # type: ignore[redundant-expr]
            return
        if not self.head_sent:
            self._write_reply(Reply(status, error_type, message))
            return
        parser = self.parser
        if parser is not None and parser.at_event_boundary:
            # The API itself reports mid-stream failures as an SSE error event.
            self.stream_error = error_type
            with contextlib.suppress(StreamClosedError):
                self.conn.write(sse_error_event(error_type, message))
                self.conn.finish()
        else:
            self.conn.close()  # mid-event: a truncated body is the honest signal

    def _cancelled(self) -> None:
        reason = self.cancel_reason or SHUTDOWN
        self.outcome = reason
        if reason == CLIENT_GONE:
            self._client_went_away()
        elif reason == REVOKED:
            self._fail_mid_reply(401, "authentication_error", "This session was revoked.")
        else:
            self._fail_mid_reply(503, "overloaded_error", "The proxy is shutting down.")

    def _client_went_away(self) -> None:
        self.outcome = CLIENT_GONE
        self.proxy.metrics.client_disconnects.inc()
        self._take_stream_usage()

    # ------------------------------------------------------------ accounting

    def charge(self) -> tuple[Usage | None, float]:
        """The usage to bill and its cost, with floors for replies cut short."""
        usage = self.usage
        if (
            usage is None
            and self.route == "messages"
            and self.forwarded
            and self.outcome != OK
            and self.status in (0, 200)
        ):
            # Cut off before message_start: the API may have started work; charge the
            # prompt at ~4 bytes per token rather than nothing.
            usage = Usage(input_tokens=math.ceil(self.body_bytes / 4), estimated=True)
        if usage is None or self.route != "messages":
            return usage, 0.0
        return usage, cost_usd(self.model, usage)

    def log_fields(self) -> dict[str, Any]:
        claims = self.claims
        usage = self.usage
        now = time.perf_counter()
        fields: dict[str, Any] = {
            "request_id": self.request_id,
            "method": "POST",
            "route": self.route,
            "beta": self.beta,
            "user": claims.user if claims else None,
            "session": claims.session if claims else None,
            "model": self.model,
            "status": self.status,
            "outcome": self.refusal_reason or self.outcome,
            "stream": self.streamed,
            "latency_ms": round((now - self.started) * 1000, 3),
            "ttfb_ms": (
                round((self.first_byte - self.started) * 1000, 3) if self.first_byte else None
            ),
            "bytes_in": self.received,
            "bytes_out": self.bytes_out,
        }
        if usage is not None:
            fields.update(
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cache_creation_input_tokens=usage.cache_creation_input_tokens,
                cache_read_input_tokens=usage.cache_read_input_tokens,
                usage_estimated=usage.estimated,
            )
        if self.stream_error:
            fields["stream_error"] = self.stream_error
        return fields


def _reason(status: int) -> str:
    return http.client.responses.get(status, "Unknown")


def _response_headers(upstream: httputil.HTTPHeaders) -> httputil.HTTPHeaders:
    """Upstream headers minus hop-by-hop ones (including those named in ``Connection``).

    Tornado's parser has already rejected malformed names and values (and it refuses
    CR/LF when writing), so values are copied without validating them again.
    """
    dropped = DROPPED_RESPONSE_HEADERS
    nominated = upstream.get("Connection")
    if nominated:
        dropped = dropped | {t.strip().lower() for t in nominated.split(",")}
    out = httputil.HTTPHeaders()
    for name, value in upstream.get_all():
        if name.lower() not in dropped:
            if name in out:
                out.add(name, value)
            else:
                out[name] = value
    return out


class _UpstreamReply(httputil.HTTPMessageDelegate):
    """Receives the upstream's reply for one :class:`ForwardRequest`."""

    __slots__ = ("done", "head_seen", "keep_alive", "request")

    def __init__(self, request: ForwardRequest) -> None:
        self.request = request
        self.head_seen = False
        self.done = False
        self.keep_alive = True

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> None:
        assert isinstance(start_line, httputil.ResponseStartLine)
        self.head_seen = True
        connection = headers.get("Connection", "").lower()
        if "close" in connection or (
            start_line.version == "HTTP/1.0" and "keep-alive" not in connection
        ):
            self.keep_alive = False
        self.request.upstream_head(start_line, headers)
        if self.request.redirected:
            self.keep_alive = False

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        return self.request.upstream_data(chunk)

    def finish(self) -> None:
        self.done = True
        self.request.upstream_finish()
