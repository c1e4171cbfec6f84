"""Small helpers of the terminal layer: the replay buffer and an inline executor."""

from __future__ import annotations

import concurrent.futures
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class ReplayBuffer(deque[str]):
    """Recent output, bounded by characters rather than chunks.

    terminado bounds its buffer at 1000 *chunks*, so a reconnect can replay anything
    from a few bytes to tens of MB. Bounding by size keeps both the memory per
    terminal and the replay message predictable. ``copy()``/``popleft()`` are what the
    stock ``TermSocket.open`` uses to replay.
    """

    def __init__(self, max_chars: int) -> None:
        super().__init__()
        self.max_chars = max_chars
        self.chars = 0

    def append(self, text: str) -> None:
        if len(text) > self.max_chars:
            text = text[-self.max_chars :]
        super().append(text)
        self.chars += len(text)
        while self.chars > self.max_chars:
            head = super().popleft()
            self.chars -= len(head)

    def popleft(self) -> str:
        head = super().popleft()
        self.chars -= len(head)
        return head

    def copy(self) -> deque[str]:  # type: ignore[override]
        return deque(self)


class InlineExecutor(concurrent.futures.Executor):
    """Runs submitted calls at once, on the caller's thread.

    The stock ``TermSocket`` hands each stdin message to the manager's
    ``blocking_io_executor`` because a local PTY write can block. Our "write" only
    appends to an in-memory queue, so the thread hop would add latency and nothing
    else.
    """

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as e:  # noqa: BLE001 - delivered through the future
            future.set_exception(e)
        return future
