"""A small client of JupyterLab's terminal websocket protocol for tests."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def plain(text: str) -> str:
    """Terminal output without ANSI escape sequences."""
    return ANSI.sub("", text)


class TermClient:
    """Speaks ``["stdin", …]``/``["set_size", …]`` and collects ``stdout``."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.output = ""
        self.messages: list[list[Any]] = []
        self.disconnected = False
        self.closed = False

    async def _next(self, timeout: float) -> bool:
        raw = await asyncio.wait_for(self.ws.read_message(), timeout)
        if raw is None:
            self.closed = True
            return False
        msg = json.loads(raw)
        self.messages.append(msg)
        if msg[0] == "stdout":
            self.output += msg[1]
        elif msg[0] == "disconnect":
            self.disconnected = True
        return True

    async def expect(self, predicate: Callable[[str], bool] | str, timeout: float = 20) -> str:
        """Read until ``predicate(plain output)`` holds (or the text appears)."""
        check = (lambda out: predicate in out) if isinstance(predicate, str) else predicate
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not check(plain(self.output)):
            remaining = deadline - loop.time()
            if remaining <= 0 or self.closed:
                raise AssertionError(
                    f"terminal output never matched {predicate!r}; got:\n{plain(self.output)[-2000:]}"
                )
            try:
                await self._next(remaining)
            except asyncio.TimeoutError:
                continue
        return plain(self.output)

    async def expect_closed(self, timeout: float = 20) -> None:
        """Read until the server closes the socket."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.closed:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError("the terminal websocket was not closed")
            try:
                await self._next(remaining)
            except asyncio.TimeoutError:
                continue

    def stdin(self, text: str) -> None:
        self.ws.write_message(json.dumps(["stdin", text]))

    def set_size(self, rows: int, cols: int) -> None:
        self.ws.write_message(json.dumps(["set_size", rows, cols, rows * 16, cols * 8]))

    def close(self) -> None:
        self.ws.close()
