"""The Kubernetes exec/attach streaming protocol over WebSocket.

Each binary frame starts with a channel byte: 0 stdin, 1 stdout, 2 stderr,
3 status (a ``Status`` JSON with the exit code), 4 resize (``{"Width","Height"}``).
``v5.channel.k8s.io`` adds a close frame (``0xff`` + channel); we offer v5 first and
fall back to v4, which every API server since 1.4 speaks.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from kubernetes_asyncio.stream.ws_client import WsApiClient, get_websocket_url

from ..base import SandboxStream

STDIN, STDOUT, STDERR, STATUS, RESIZE = 0, 1, 2, 3, 4
CLOSE = 255
PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")


def parse_status(data: bytes | str) -> tuple[int, str]:
    """Exit code and message of a channel-3 ``Status`` document.

    ``Success`` is 0; ``NonZeroExitCode`` carries the code in ``details.causes``;
    any other failure (e.g. the container died) has no code, reported as -1.
    """
    try:
        status: dict[str, Any] = json.loads(data)
    except ValueError:
        return -1, "unreadable exit status"
    if status.get("status") == "Success":
        return 0, ""
    message = str(status.get("message", ""))
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            try:
                return int(cause.get("message", "")), message
            except ValueError:
                break
    return -1, message


class ChannelWsApiClient(WsApiClient):  # type: ignore[misc]
    """A ``WsApiClient`` that negotiates the subprotocol properly.

    The stock client passes ``Sec-WebSocket-Protocol`` as a raw header offering v4
    only, so aiohttp never learns which protocol the server chose. We hand aiohttp
    the list instead; ``ws.protocol`` then tells us the selection.
    """

    async def request(  # type: ignore[override]
        self,
        method: str,
        url: str,
        query_params: list[tuple[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        post_params: Any = None,
        body: Any = None,
        _preload_content: bool = True,
        _request_timeout: Any = None,
    ) -> Any:
        if _preload_content:  # not used by us; keep the parent's behaviour
            return await super().request(
                method, url, query_params, headers, post_params, body, True, _request_timeout
            )
        params: list[tuple[str, Any]] = []
        for key, value in query_params or []:
            if key == "command" and isinstance(value, list):
                params.extend((key, str(part)) for part in value)
            elif isinstance(value, bool):
                params.append((key, "true" if value else "false"))
            else:
                params.append((key, str(value)))
        headers = {
            k: v for k, v in (headers or {}).items() if k.lower() != "sec-websocket-protocol"
        }
        return self.rest_client.pool_manager.ws_connect(
            get_websocket_url(url),
            params=params,
            headers=headers,
            protocols=PROTOCOLS,
            heartbeat=self.heartbeat,
            max_msg_size=0,
        )


class ChannelStream(SandboxStream):
    """A TTY session over an exec or attach WebSocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        #: The negotiated subprotocol (v5 or v4).
        self.protocol = ws.protocol or ""
        self.status_message = ""

    async def read(self) -> bytes:
        while True:
            msg = await self._ws.receive()
            if msg.type == aiohttp.WSMsgType.BINARY:
                data: bytes = msg.data
            elif msg.type == aiohttp.WSMsgType.TEXT:
                data = msg.data.encode("utf-8")
            else:  # CLOSE, CLOSING, CLOSED, ERROR: the stream is over
                return b""
            if not data:
                continue
            channel, payload = data[0], data[1:]
            if channel in (STDOUT, STDERR):
                if payload:
                    return payload
            elif channel == STATUS:
                self.exit_status, self.status_message = parse_status(payload)
            # channel 255 (v5 close) and unknown channels carry nothing for us

    async def write(self, data: bytes) -> None:
        await self._ws.send_bytes(bytes((STDIN,)) + data)

    async def resize(self, rows: int, cols: int) -> None:
        payload = json.dumps({"Width": cols, "Height": rows}).encode()
        await self._ws.send_bytes(bytes((RESIZE,)) + payload)

    async def close(self) -> None:
        if not self._ws.closed:
            await self._ws.close()
