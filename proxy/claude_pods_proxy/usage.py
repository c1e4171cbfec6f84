"""Token usage of a Messages API reply, read from JSON or from an SSE stream as it passes.

Pure code (no I/O) so every parsing rule is unit-tested byte by byte. The rules come
from the API's streaming documentation:

* ``message_start.message.usage`` carries the input side (``input_tokens``,
  ``cache_creation_input_tokens``, ``cache_read_input_tokens``) and an initial
  ``output_tokens``;
* ``message_delta.usage`` counts are **cumulative**: the *last* ``message_delta`` wins,
  field by field over ``message_start``; summing them would overcharge;
* ``ping`` and event types we do not know are ignored (and forwarded untouched by the
  caller, which never waits for this parser).

When a stream ends without any ``message_delta`` (the client went away, the upstream
stalled), output is estimated at one token per 4 bytes of delta payload, the same floor
Anthropic's own gateway bills for aborted streams, so cancelling early is not a way to
spend tokens for free.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["SseUsageParser", "Usage", "usage_from_message"]

#: Bytes of streamed delta payload counted as one output token for aborted streams.
BYTES_PER_TOKEN_ESTIMATE = 4
#: A single SSE line longer than this stops usage parsing (memory bound); bytes still flow.
MAX_LINE_BYTES = 8 << 20
_INTERESTING = frozenset({b"message_start", b"message_delta", b"message_stop", b"error"})


def _int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


@dataclass(frozen=True)
class Usage:
    """Token counts of one reply (the API's names; the 1-hour cache write split out)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    #: Part of ``cache_creation_input_tokens`` written with the 1-hour TTL (priced higher).
    cache_creation_1h_input_tokens: int = 0
    web_search_requests: int = 0
    #: True when output_tokens is the bytes-based estimate of an aborted stream.
    estimated: bool = False

    def merged(self, data: Mapping[str, Any]) -> Usage:
        """This usage with every count present in the API ``usage`` object *data* replaced."""
        changes: dict[str, Any] = {}
        for name in (
            "input_tokens",
            "output_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
        ):
            value = _int(data.get(name))
            if value is not None:
                changes[name] = value
        creation = data.get("cache_creation")
        if isinstance(creation, Mapping):
            value = _int(creation.get("ephemeral_1h_input_tokens"))
            if value is not None:
                changes["cache_creation_1h_input_tokens"] = value
        server_tools = data.get("server_tool_use")
        if isinstance(server_tools, Mapping):
            value = _int(server_tools.get("web_search_requests"))
            if value is not None:
                changes["web_search_requests"] = value
        return replace(self, **changes) if changes else self

    @classmethod
    def from_api(cls, data: object) -> Usage:
        return cls().merged(data) if isinstance(data, Mapping) else cls()


def usage_from_message(body: bytes) -> tuple[str | None, Usage | None]:
    """``(model, usage)`` of a non-streaming reply body; ``(None, None)`` if it has none."""
    try:
        message = json.loads(body)
    except ValueError:
        return None, None
    if not isinstance(message, dict) or not isinstance(message.get("usage"), dict):
        return None, None
    model = message.get("model")
    return (model if isinstance(model, str) else None), Usage.from_api(message["usage"])


class SseUsageParser:
    """Feed it the bytes of an SSE reply in any chunking; read :meth:`result` at the end.

    Only ``message_start``, ``message_delta``, ``message_stop`` and ``error`` events are
    JSON-decoded; delta events are only measured, which keeps the per-chunk cost low.
    """

    def __init__(self) -> None:
        self._partial = b""
        self._event: bytes | None = None
        self._data: list[bytes] | None = None
        self._broken = False
        self._start: Mapping[str, Any] | None = None
        self._last_delta: Mapping[str, Any] | None = None
        self.model: str | None = None
        self.error_type: str | None = None
        self.stopped = False
        self.delta_bytes = 0

    @property
    def at_event_boundary(self) -> bool:
        """True when everything fed so far ended exactly at the end of an event.

        Only then can the proxy append an ``error`` event of its own without corrupting
        the stream the client is parsing.
        """
        return not self._partial and self._event is None and self._data is None

    def feed(self, chunk: bytes) -> None:
        if self._broken or not chunk:
            return
        buf = self._partial + chunk if self._partial else chunk
        start = 0
        find = buf.find
        while True:
            end = find(b"\n", start)
            if end < 0:
                break
            line = buf[start:end]
            start = end + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            self._line(line)
        self._partial = buf[start:]
        if len(self._partial) > MAX_LINE_BYTES:
            self._broken = True
            self._partial = b""

    def _line(self, line: bytes) -> None:
        if not line:
            if self._data is not None:
                self._dispatch(self._event, b"\n".join(self._data))
            self._event = None
            self._data = None
            return
        if line.startswith(b"data:"):
            value = line[6:] if line.startswith(b"data: ") else line[5:]
            if self._event is None or self._event in _INTERESTING:
                if self._data is None:
                    self._data = [value]
                else:
                    self._data.append(value)
            else:
                if self._event == b"content_block_delta":
                    self.delta_bytes += len(value)
                if self._data is None:
                    self._data = []
        elif line.startswith(b"event:"):
            self._event = line[6:].strip()
        # comments (":..."), "id:", "retry:" and unknown fields carry no usage

    def _dispatch(self, event: bytes | None, data: bytes) -> None:
        if event is not None and event not in _INTERESTING:
            return
        try:
            obj = json.loads(data)
        except ValueError:
            return
        if not isinstance(obj, dict):
            return
        kind = obj.get("type")
        if kind == "message_start":
            message = obj.get("message")
            if isinstance(message, dict):
                model = message.get("model")
                self.model = model if isinstance(model, str) else self.model
                usage = message.get("usage")
                self._start = usage if isinstance(usage, dict) else {}
        elif kind == "message_delta":
            usage = obj.get("usage")
            if isinstance(usage, dict):
                self._last_delta = usage
        elif kind == "message_stop":
            self.stopped = True
        elif kind == "error":
            error = obj.get("error")
            if isinstance(error, dict) and isinstance(error.get("type"), str):
                self.error_type = error["type"]
            else:
                self.error_type = "error"
        elif kind == "content_block_delta":  # only reached for streams without event lines
            self.delta_bytes += len(data)

    def result(self) -> Usage | None:
        """The usage seen so far; ``None`` if the stream never got to ``message_start``."""
        if self._start is None and self._last_delta is None:
            return None
        usage = Usage.from_api(self._start)
        if self._last_delta is not None:
            return usage.merged(self._last_delta)
        estimate = math.ceil(self.delta_bytes / BYTES_PER_TOKEN_ESTIMATE)
        return replace(usage, output_tokens=max(usage.output_tokens, estimate), estimated=True)
