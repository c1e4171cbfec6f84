"""A fake Anthropic Messages API on 127.0.0.1, for the proxy's tests and benchmark.

Why a server: the proxy's job is what happens on the wire (which path, which headers,
which bytes when), so the tests need an upstream that records exactly what arrived and
can misbehave on cue. This one speaks the Messages API as the real one does:

* ``POST /v1/messages``: JSON, or SSE when the body says ``"stream": true``
  (``message_start`` → ``content_block_start`` → ``ping`` → deltas →
  ``content_block_stop`` → ``message_delta`` (cumulative usage) → ``message_stop``);
  text or ``tool_use`` content;
* ``POST /v1/messages/count_tokens``: ``{"input_tokens": n}``;
* ``HEAD`` anything: 200; any other request: 404 ``not_found_error``;
* a wrong or missing ``x-api-key``: 401 ``authentication_error``.

Every request is recorded (method, raw target, path, query, every header, body) before
it is answered, including 404s, so a test can prove what did *not* reach it. Replies
can be scripted per request (:class:`Reply`), chosen from the request's body by a
:attr:`FakeAnthropicAPI.responder` (a client such as Claude Code interleaves side
requests, e.g. a session title, with the conversation, so a queue would be consumed out
of order), or shaped by the test-only body fields
``fake_delay`` and ``fake_chunks`` (so a benchmark can ask through any proxy): errors (401/429/500/529, with the API's
bodies and headers), slow streams (a delay between events), stalled streams (stop
after *n* events until :meth:`FakeAnthropicAPI.release` or the client disconnects),
mid-stream ``error`` events, redirects and extra headers. Disconnects are counted and
can be awaited. It binds loopback addresses only and refuses anything else.

Run it alone (the benchmark does)::

    python -m tests.fakes.anthropic_api --port 0 --port-file PATH [--events N] [--delay S]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import itertools
import json
import signal
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import tornado.httpserver
import tornado.iostream
import tornado.netutil
import tornado.web

DEFAULT_KEY = "sk-ant-api03-FAKE-REAL-KEY-0123456789"
DEFAULT_TEXT = "Hi! This is the FAKE Anthropic API speaking."
DEFAULT_MODEL = "claude-sonnet-4-5"
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass(frozen=True)
class Recorded:
    """One request as the fake received it."""

    n: int
    method: str
    target: str  # the raw request target, exactly as sent
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes
    time: float
    #: The client's (address, port): equal ports mean one keep-alive connection.
    peer: tuple[str, int] | None = None

    def header(self, name: str) -> str | None:
        values = self.header_values(name)
        return values[0] if values else None

    def header_values(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass(frozen=True)
class Reply:
    """How to answer one request (defaults: a short text message, streamed if asked)."""

    kind: str = "text"  # text | tool_use | error | redirect
    text: str = DEFAULT_TEXT
    #: The text is split into this many content_block_delta events.
    chunks: int = 3
    status: int = 200
    error_message: str = "fake error"
    headers: dict[str, str] = field(default_factory=dict)
    model: str | None = None  # None: echo the request's model
    usage_start: dict[str, Any] = field(
        default_factory=lambda: {
            "input_tokens": 25,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 1,
        }
    )
    #: One message_delta per entry, each with this (cumulative) usage.
    usage_deltas: tuple[dict[str, Any], ...] = ({"output_tokens": 12},)
    #: Seconds between SSE events.
    delay: float = 0.0
    pings: int = 1
    #: Stop after this many SSE events until release() or a disconnect.
    stall_after: int | None = None
    #: Stall before sending the response head at all.
    stall_before_headers: bool = False
    #: Close the connection abruptly after this many SSE events (a broken upstream).
    drop_after: int | None = None
    #: Send an ``error`` event of this type after the first content delta.
    stream_error: str | None = None
    location: str | None = None
    tool_name: str = "Read"
    tool_input: dict[str, Any] = field(default_factory=lambda: {"file_path": "/etc/hostname"})


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class FakeAnthropicAPI:
    """``await start()``, point a client at :attr:`url`, inspect :attr:`requests`."""

    def __init__(
        self,
        api_keys: Iterable[str] = (DEFAULT_KEY,),
        *,
        host: str = "127.0.0.1",
        default: Reply | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not _is_loopback(host):
            raise ValueError(f"the fake API binds loopback addresses only, not {host!r}")
        self.host = host
        self.ssl_context = ssl_context
        self.api_keys = set(api_keys)
        self.default = default or Reply()
        self.replies: deque[Reply] = deque()
        #: Called with each ``/v1/messages`` body; a :class:`Reply` it returns wins over
        #: :attr:`replies` and :attr:`default` (``None``: use them).
        self.responder: Callable[[dict[str, Any]], Reply | None] | None = None
        self.requests: list[Recorded] = []
        self.disconnects = 0
        self.in_flight = 0
        self.port = 0
        self._counter = itertools.count(1)
        self._changed: asyncio.Condition | None = None
        self._release: asyncio.Event | None = None
        self._server: tornado.httpserver.HTTPServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with *replies*, in order, then with :attr:`default`."""
        self.replies.extend(replies)

    def release(self) -> None:
        """Let every stalled reply (and later ones) carry on."""
        assert self._release is not None
        self._release.set()

    async def start(self, port: int = 0) -> None:
        self._changed = asyncio.Condition()
        self._release = asyncio.Event()
        app = tornado.web.Application([(r".*", _Handler, {"api": self})])
        self._server = tornado.httpserver.HTTPServer(
            app, max_body_size=64 << 20, ssl_options=self.ssl_context
        )
        sockets = tornado.netutil.bind_sockets(port, self.host, backlog=2048)
        self._server.add_sockets(sockets)
        self.port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            if self._release is not None:
                self._release.set()
            await self._server.close_all_connections()
            self._server = None

    async def drop_connections(self) -> None:
        """Close every client connection, idle keep-alive ones included."""
        assert self._server is not None
        await self._server.close_all_connections()

    async def _notify(self) -> None:
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate: Any, timeout: float = 10.0) -> None:
        """Wait until ``predicate()`` is true (re-checked on every request or disconnect)."""
        assert self._changed is not None

        async def until() -> None:
            assert self._changed is not None
            async with self._changed:
                await self._changed.wait_for(predicate)

        await asyncio.wait_for(until(), timeout)

    async def wait_requests(self, n: int, timeout: float = 10.0) -> None:
        await self.wait_for(lambda: len(self.requests) >= n, timeout)

    async def wait_disconnects(self, n: int, timeout: float = 10.0) -> None:
        await self.wait_for(lambda: self.disconnects >= n, timeout)


class _Handler(tornado.web.RequestHandler):
    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "DELETE", "PATCH", "PUT", "OPTIONS")

    def initialize(self, api: FakeAnthropicAPI) -> None:
        self.api = api
        self.n = 0
        self.closed = asyncio.Event()
        self.counted = False

    def set_default_headers(self) -> None:
        self.clear_header("Server")

    def on_connection_close(self) -> None:
        self.closed.set()
        if self.counted:
            self.api.disconnects += 1
            task = asyncio.ensure_future(self.api._notify())
            self.api._tasks.add(task)
            task.add_done_callback(self.api._tasks.discard)

    async def _record(self) -> Recorded:
        request = self.request
        rec = Recorded(
            n=next(self.api._counter),
            method=request.method or "",
            target=request.uri or "",
            path=request.path,
            query=request.query,
            headers=list(request.headers.get_all()),
            body=request.body,
            time=time.time(),
            peer=_peer(request),
        )
        self.n = rec.n
        self.api.requests.append(rec)
        await self.api._notify()
        return rec

    def _common_headers(self, reply: Reply | None = None) -> None:
        self.set_header("request-id", f"req_fake_{self.n:06d}")
        self.set_header("anthropic-organization-id", "org-fake-0001")
        self.set_header("anthropic-ratelimit-requests-limit", "4000")
        self.set_header("anthropic-ratelimit-requests-remaining", "3999")
        self.set_header("anthropic-ratelimit-requests-reset", "2026-11-26T00:00:01Z")
        if reply is not None:
            for name, value in reply.headers.items():
                self.set_header(name, value)

    def _error(
        self, status: int, error_type: str, message: str, reply: Reply | None = None
    ) -> None:
        self.set_status(status)
        self._common_headers(reply)
        self.set_header("Content-Type", "application/json")
        body = {
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": f"req_fake_{self.n:06d}",
        }
        self.finish(json.dumps(body))

    async def head(self) -> None:
        await self._record()
        self.finish()

    async def get(self) -> None:
        await self._record()
        self._error(404, "not_found_error", f"Not found: {self.request.path}")

    put = patch = delete = options = get

    async def post(self) -> None:
        rec = await self._record()
        path = self.request.path
        if path not in ("/v1/messages", "/v1/messages/count_tokens"):
            self._error(404, "not_found_error", f"Not found: {path}")
            return
        if self.request.headers.get("x-api-key") not in self.api.api_keys:
            self._error(401, "authentication_error", "invalid x-api-key")
            return
        try:
            body = json.loads(rec.body)
        except ValueError:
            self._error(400, "invalid_request_error", "body is not JSON")
            return
        if path.endswith("/count_tokens"):
            self._common_headers()
            self.finish({"input_tokens": max(1, len(rec.body) // 4)})
            return
        reply = self.api.responder(body) if self.api.responder is not None else None
        if reply is None:
            reply = self.api.replies.popleft() if self.api.replies else self.api.default
        if reply.model is None:
            reply = replace(reply, model=str(body.get("model") or DEFAULT_MODEL))
        if "fake_delay" in body or "fake_chunks" in body:
            # Test-only knobs in the body (forwarded verbatim by any proxy): shape this reply.
            chunks = int(body.get("fake_chunks", reply.chunks))
            reply = replace(
                reply,
                delay=float(body.get("fake_delay", reply.delay)),
                chunks=chunks,
                text=(reply.text * (4 * chunks // len(reply.text) + 1))[: max(chunks, 1) * 4],
            )
        self.counted = True
        if reply.stall_before_headers:
            await self._stall()
            if self.closed.is_set():
                return
        if reply.kind == "error":
            kind = ERROR_TYPES.get(reply.status, "api_error")
            self._error(reply.status, kind, reply.error_message, reply)
            return
        if reply.kind == "redirect":
            self.set_status(reply.status)
            self._common_headers(reply)
            self.set_header("Location", reply.location or "/")
            self.finish()
            return
        self.api.in_flight += 1
        try:
            if body.get("stream"):
                await self._stream(reply)
            else:
                self._common_headers(reply)
                self.set_header("Content-Type", "application/json")
                self.finish(_message(reply, self.n))
        finally:
            self.api.in_flight -= 1

    async def _stall(self) -> None:
        assert self.api._release is not None
        release = asyncio.ensure_future(self.api._release.wait())
        closed = asyncio.ensure_future(self.closed.wait())
        await asyncio.wait([release, closed], return_when=asyncio.FIRST_COMPLETED)
        for task in (release, closed):
            task.cancel()

    async def _stream(self, reply: Reply) -> None:
        self._common_headers(reply)
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        for i, event in enumerate(_events(reply, self.n)):
            if reply.stall_after is not None and i == reply.stall_after:
                await self._stall()
            if self.closed.is_set():
                return
            if i and reply.delay:
                await asyncio.sleep(reply.delay)
            if reply.drop_after is not None and i == reply.drop_after:
                assert self.request.connection is not None
                self.request.connection.close()  # type: ignore[attr-defined]
                return
            self.write(event)
            with contextlib.suppress(tornado.iostream.StreamClosedError):
                await self.flush()
        self.finish()


def _peer(request: Any) -> tuple[str, int] | None:
    with contextlib.suppress(AttributeError, OSError):
        name = request.connection.stream.socket.getpeername()
        return (name[0], name[1])
    return None


def _split(text: str, n: int) -> list[str]:
    n = max(1, min(n, len(text)))
    size = -(-len(text) // n)
    return [text[i : i + size] for i in range(0, len(text), size)]


def _content(reply: Reply, n: int) -> dict[str, Any]:
    if reply.kind == "tool_use":
        return {
            "type": "tool_use",
            "id": f"toolu_fake_{n:06d}",
            "name": reply.tool_name,
            "input": reply.tool_input,
        }
    return {"type": "text", "text": reply.text}


def _final_usage(reply: Reply) -> dict[str, Any]:
    usage = dict(reply.usage_start)
    for delta in reply.usage_deltas:
        usage.update(delta)
    return usage


def _message(reply: Reply, n: int) -> bytes:
    message = {
        "id": f"msg_fake_{n:06d}",
        "type": "message",
        "role": "assistant",
        "model": reply.model,
        "content": [_content(reply, n)],
        "stop_reason": "tool_use" if reply.kind == "tool_use" else "end_turn",
        "stop_sequence": None,
        "usage": _final_usage(reply),
    }
    return json.dumps(message).encode()


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _events(reply: Reply, n: int) -> list[bytes]:
    start = {
        "type": "message_start",
        "message": {
            "id": f"msg_fake_{n:06d}",
            "type": "message",
            "role": "assistant",
            "model": reply.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": reply.usage_start,
        },
    }
    events = [_sse("message_start", start)]
    if reply.kind == "tool_use":
        block: dict[str, Any] = {**_content(reply, n), "input": {}}
        pieces = _split(json.dumps(reply.tool_input), reply.chunks)
        deltas = [{"type": "input_json_delta", "partial_json": p} for p in pieces]
    else:
        block = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": p} for p in _split(reply.text, reply.chunks)]
    events.append(
        _sse(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": block},
        )
    )
    events.extend(_sse("ping", {"type": "ping"}) for _ in range(reply.pings))
    for i, delta in enumerate(deltas):
        events.append(
            _sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
        )
        if i == 0 and reply.stream_error:
            events.append(
                _sse(
                    "error",
                    {
                        "type": "error",
                        "error": {"type": reply.stream_error, "message": "Overloaded"},
                    },
                )
            )
            return events
    events.append(_sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
    stop_reason = "tool_use" if reply.kind == "tool_use" else "end_turn"
    for usage in reply.usage_deltas:
        events.append(
            _sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                    "usage": usage,
                },
            )
        )
    events.append(_sse("message_stop", {"type": "message_stop"}))
    return events


# ---------------------------------------------------------------------- standalone


async def _main(args: argparse.Namespace) -> None:
    default = Reply(
        text=args.text,
        chunks=args.events,
        delay=args.delay,
        pings=args.pings,
    )
    api = FakeAnthropicAPI(args.api_key or (DEFAULT_KEY,), host=args.host, default=default)
    await api.start(args.port)
    if args.keep_requests == 0:
        # A benchmark sends hundreds of thousands of requests: don't keep them all.
        api.requests = _Discard()
    if args.port_file:
        Path(args.port_file).write_text(str(api.port))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await api.stop()


class _Discard(list):  # type: ignore[type-arg]
    def append(self, item: Any) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file")
    parser.add_argument("--api-key", action="append", help="accepted key (repeatable)")
    parser.add_argument("--text", default=DEFAULT_TEXT)
    parser.add_argument("--events", type=int, default=3, help="content deltas per stream")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between SSE events")
    parser.add_argument("--pings", type=int, default=1)
    parser.add_argument("--keep-requests", type=int, default=0, help="1: record requests")
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
