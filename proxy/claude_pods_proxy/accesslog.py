"""The access log: one JSON object per request, never a key, a token or a body.

Two sinks with the same content:

* :class:`LoggingAccessLog` (the library default) hands each line to the
  ``claude_pods_proxy.access`` logger, so an embedding application routes it as it likes;
* :class:`StreamAccessLog` (what ``claude-pods-proxy serve`` uses) appends lines to a
  buffer written to stdout at most every ``interval`` seconds. Going through
  ``logging`` costs tens of microseconds per line (record creation, caller lookup, a
  flushed write), about a tenth of the proxy's whole per-request budget; a buffered
  stream costs one ``json.dumps``. A crash can lose the last ``interval`` of lines.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, TextIO

__all__ = ["AccessLog", "LoggingAccessLog", "StreamAccessLog"]

ACCESS_LOGGER = "claude_pods_proxy.access"


def _line(fields: dict[str, Any]) -> str:
    return json.dumps({"ts": round(time.time(), 3), **fields}, separators=(",", ":"))


class AccessLog:
    """Interface: :meth:`write` one request's fields; :meth:`close` flushes."""

    @property
    def enabled(self) -> bool:
        return True

    def write(self, fields: dict[str, Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Flush what is buffered."""


class LoggingAccessLog(AccessLog):
    """Each line is an INFO record of the ``claude_pods_proxy.access`` logger."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger(ACCESS_LOGGER)

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def write(self, fields: dict[str, Any]) -> None:
        self.logger.info("%s", _line(fields))


class StreamAccessLog(AccessLog):
    """Lines buffered in memory and written to *stream* every *interval* seconds."""

    def __init__(self, stream: TextIO, interval: float = 0.1, max_buffered: int = 1000) -> None:
        self.stream = stream
        self.interval = interval
        self.max_buffered = max_buffered
        self._lines: list[str] = []
        self._timer: asyncio.TimerHandle | None = None

    def write(self, fields: dict[str, Any]) -> None:
        self._lines.append(_line(fields))
        if len(self._lines) >= self.max_buffered:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._lines:
            lines, self._lines = self._lines, []
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()

    def close(self) -> None:
        self.flush()
