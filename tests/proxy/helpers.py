"""Clients for the proxy tests: raw HTTP/1.1 over a socket (to send what no library would),
and a canary listener that must never be contacted."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from claude_pods_proxy.tokens import mint_token

SECRET = b"proxy-test-secret-0123456789abcdef-0123456789"
REAL_KEY = "sk-ant-api03-REAL-KEY-must-never-leave-the-proxy-0123456789"
MESSAGE = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 1024,
    "messages": [{"role": "user", "content": "PROMPT-MARKER say hi"}],
}


def token(user: str = "alice", session: str = "sess-1", ttl: float = 600, **kw: Any) -> str:
    return mint_token(SECRET, user, session, ttl, **kw)


def admin_token(ttl: float = 60) -> str:
    return mint_token(SECRET, "ops", "admin", ttl, purpose="admin")


def body(stream: bool = False, **fields: Any) -> bytes:
    return json.dumps({**MESSAGE, "stream": stream, **fields}).encode()


@dataclass
class RawResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    raw_head: bytes = b""
    closed: bool = False  # the server closed the connection after the response

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def header_names(self) -> set[str]:
        return {key.lower() for key, _ in self.headers}

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class RawConnection:
    """One keep-alive HTTP/1.1 connection driven byte by byte."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, host: str = "127.0.0.1") -> RawConnection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def read_head(self) -> RawResponse:
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        _version, status, *reason = lines[0].split(" ", 2)
        headers = []
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers.append((name.strip(), value.strip()))
        return RawResponse(int(status), reason[0] if reason else "", headers, b"", head)

    async def read_chunk(self) -> bytes:
        """One chunk of a chunked body (b"" at the end)."""
        size_line = await self.reader.readuntil(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        data = await self.reader.readexactly(size) if size else b""
        await self.reader.readexactly(2)
        return data

    async def read_response(self, method: str = "POST") -> RawResponse:
        return await self.read_body(await self.read_head(), method)

    async def read_body(self, resp: RawResponse, method: str = "POST") -> RawResponse:
        if method == "HEAD" or resp.status in (204, 304):
            return resp
        length = resp.header("Content-Length")
        if resp.header("Transfer-Encoding") == "chunked":
            parts = []
            while chunk := await self.read_chunk():
                parts.append(chunk)
            resp.body = b"".join(parts)
        elif length is not None:
            resp.body = await self.reader.readexactly(int(length))
        else:
            resp.body = await self.reader.read()
            resp.closed = True
        return resp

    async def read_until_closed(self, timeout: float = 5.0) -> bytes:
        return await asyncio.wait_for(self.reader.read(), timeout)

    def close(self) -> None:
        self.writer.close()


def request_bytes(
    target: str,
    *,
    method: str = "POST",
    body: bytes = b"",
    headers: list[tuple[str, str]] | None = None,
    auth: str | None = None,
    host: str = "proxy.local",
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    if auth is not None:
        lines.append(f"Authorization: Bearer {auth}")
    for name, value in headers or [
        ("anthropic-version", "2023-06-01"),
        ("content-type", "application/json"),
    ]:
        lines.append(f"{name}: {value}")
    if method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def raw_request(
    port: int, data: bytes, method: str = "POST", timeout: float = 10.0
) -> RawResponse:
    conn = await RawConnection.open(port)
    try:
        conn.send(data)
        return await asyncio.wait_for(conn.read_response(method), timeout)
    finally:
        conn.close()


@dataclass
class Canary:
    """A loopback listener standing in for "another host": any connection is a failure."""

    port: int = 0
    #: Accept and then say nothing at all (a peer that hangs).
    silent: bool = False
    connections: int = 0
    received: list[bytes] = field(default_factory=list)
    server: asyncio.Server | None = None

    async def start(self) -> Canary:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        data = await reader.read(65536)
        self.received.append(data)
        if self.silent:
            await reader.read()  # until the other side gives up
            writer.close()
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
