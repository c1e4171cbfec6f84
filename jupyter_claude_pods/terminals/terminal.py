"""One terminal whose program runs in a sandbox.

Duck-types terminado's ``PtyWithClients`` (``clients``, ``read_buffer``,
``resize_to_smallest()``, ``ptyproc.write()``), so the stock ``TermSocket`` drives it
unchanged: reconnects replay ``read_buffer``, several tabs can share a terminal.
Output is decoded incrementally (a multibyte character split across frames stays
whole) and coalesced. Small output (echo, a prompt, a TUI redraw) is sent on the next
event-loop turn, merged with whatever else already arrived, so typing gains no
latency. Once output streams in big chunks it is sent at most once per
``coalesce_interval`` (or per ``max_message_chars``), so a large ``cat`` becomes tens
of websocket messages instead of thousands.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import threading
import typing as t
from collections.abc import Awaitable, Callable
from typing import Any

from jupyter_server._tz import utcnow

from ..sandbox.base import Sandbox, SandboxBackend, SandboxError, SandboxStream
from ..sandbox.spec import SandboxSpec
from .buffers import ReplayBuffer

DIM, RED, RESET = "\x1b[2m", "\x1b[1;31m", "\x1b[0m"
#: A flush at least this big means bulk output is streaming: throttle the next one.
BULK_CHARS = 2048
#: Keystrokes held while the sandbox starts; past this, input is dropped (and said so).
MAX_PENDING_INPUT = 256 * 1024

Resize = tuple[int, int]


class _StdinFacade:
    """What the stock ``TermSocket`` calls ``terminal.ptyproc``: only ``write`` is used."""

    def __init__(self, terminal: SandboxTerminal) -> None:
        self._terminal = terminal

    def write(self, text: str) -> None:
        self._terminal.write(text)


class SandboxTerminal:
    """A named terminal, its clients, and the session with its sandbox."""

    def __init__(
        self,
        name: str,
        owner: str,
        spec: SandboxSpec,
        backend: SandboxBackend,
        *,
        ready: Callable[[], Awaitable[None]],
        prepare: Callable[[SandboxSpec], tuple[SandboxSpec, str]],
        on_exit: Callable[[SandboxTerminal], None],  # called when the session ends
        on_state: Callable[[SandboxTerminal], None] | None = None,  # after each state change
        log: logging.Logger | logging.LoggerAdapter[Any],
        replay_chars: int = 1 << 20,
        coalesce_interval: float = 0.005,
        max_message_chars: int = 64 * 1024,
    ) -> None:
        self.term_name = name
        self.owner = owner
        self.spec = spec
        self.backend = backend
        self.log = log
        #: Websocket handlers attached to this terminal (stock ``TermSocket``s).
        self.clients: list[Any] = []
        self.read_buffer = ReplayBuffer(replay_chars)
        self.last_activity = utcnow()
        #: starting | running | failed | exited | terminated (closed; set by the manager)
        self.state = "starting"
        self.reason = ""
        self.sandbox: Sandbox | None = None
        self.ptyproc = _StdinFacade(self)
        #: Called with every coalesced output string (e.g. tutor-marker detection).
        self.observers: list[Callable[[str], None]] = []
        #: The course (id) and stage this terminal was opened for, if any.
        self.course: str | None = None
        self.stage: int | None = None
        self._ready = ready
        self._prepare = prepare
        self._on_exit = on_exit
        self._on_state = on_state
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._input: asyncio.Queue[bytes | Resize] = asyncio.Queue()
        self._queued = 0
        self._dropped_input = False
        self._size: Resize | None = None
        self._stream: SandboxStream | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending: list[str] = []
        self._pending_chars = 0
        self._flush_handle: asyncio.Handle | None = None
        self._last_flush = -1.0
        self._last_flush_chars = 0
        self._interval = coalesce_interval
        #: Seconds to wait, after a stream ends abnormally, for the pod's own status.
        self.end_grace = 3.0
        self._max_chars = max_message_chars
        self._task: asyncio.Task[None] | None = None
        self._closed: asyncio.Future[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the sandbox in the background (``POST /api/terminals`` must not wait)."""
        self._announce()  # "starting": the terminal is listed from now on
        self._task = asyncio.create_task(self._run(), name=f"claude-pods-terminal-{self.term_name}")

    @property
    def active(self) -> bool:
        """Whether this terminal holds (or is getting) a sandbox; counts toward caps."""
        return self.state in ("starting", "running")

    async def _run(self) -> None:
        try:
            await self._session()
        except asyncio.CancelledError:
            raise
        except SandboxError as e:
            self._fail(e.message)
        except Exception:
            self.log.exception("claude-pods: terminal %s failed", self.term_name)
            self._fail("internal error in the Jupyter server (see its log)")
        self._on_exit(self)

    async def _session(self) -> None:
        self._progress("starting a sandbox…")
        await self._ready()
        self.spec, note = self._prepare(self.spec)
        if note:
            self._progress(note)
        self.sandbox = await self.backend.start(self.spec, self._progress)
        self._progress("attaching…")
        stream = await self.backend.connect(self.sandbox)
        self._stream = stream
        rows, cols = self._size or (self.spec.rows, self.spec.cols)
        await stream.resize(rows, cols)
        self.set_state("running")
        self._progress("attached")
        writer = asyncio.create_task(self._write_loop(stream))
        reader = asyncio.create_task(self._read_loop(stream))
        ended = self.sandbox.ended
        try:
            await asyncio.wait(
                [t.cast(asyncio.Future[t.Any], reader), ended],
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            writer.cancel()
            if not reader.done():
                reader.cancel()
            await asyncio.gather(writer, reader, return_exceptions=True)
        if reader.done() and not reader.cancelled() and reader.exception() is not None:
            self._fail(f"the connection to the sandbox failed: {reader.exception()}")
            return
        status = stream.exit_status
        if status is not None and 0 <= status < 128:
            self._exited(status)  # the program ended by itself
            return
        # Killed by a signal, or the stream just stopped: did the pod die (OOM, eviction,
        # deadline)? The watch may report it a moment after the stream ends.
        try:
            reason = await asyncio.wait_for(asyncio.shield(ended), self.end_grace)
        except asyncio.TimeoutError:
            if status is None:
                self._fail("the connection to the sandbox was lost")
            else:
                self._exited(status)
            return
        self._fail(reason)

    async def aclose(self) -> None:
        """Stop the session and delete the sandbox; idempotent, safe from any state."""
        if self._closed is not None:
            await asyncio.shield(self._closed)
            return
        self._closed = self._loop.create_future()
        try:
            if self._task is not None and not self._task.done():
                self._task.cancel()
            if self._task is not None:
                await asyncio.gather(self._task, return_exceptions=True)
            if self._stream is not None:
                with contextlib.suppress(Exception):
                    await self._stream.close()
            if self.sandbox is not None:
                await self.backend.stop(self.sandbox)
        finally:
            self._closed.set_result(None)

    def disconnect_clients(self) -> None:
        """Tell every attached browser the terminal is gone (``["disconnect", 1]``)."""
        self._flush()
        for client in list(self.clients):
            with contextlib.suppress(Exception):
                client.on_pty_died()
        self.clients.clear()

    # ------------------------------------------------------------------ input

    def write(self, text: str) -> None:
        """Queue keystrokes; called by ``TermSocket`` (possibly from its executor thread)."""
        if threading.get_ident() != self._thread:
            self._loop.call_soon_threadsafe(self.write, text)
            return
        if not self.active:
            return
        data = text.encode("utf-8", errors="replace")
        if self._queued + len(data) > MAX_PENDING_INPUT:
            if not self._dropped_input:
                self._dropped_input = True
                self._progress("input dropped: the sandbox is not accepting it fast enough")
            return
        self._queued += len(data)
        self._input.put_nowait(data)

    def resize_to_smallest(self) -> None:
        """Size the TTY to the smallest attached client, like terminado."""
        sizes: list[Resize] = []
        for client in self.clients:
            rows, cols = getattr(client, "size", (None, None))[:2]
            if isinstance(rows, int) and isinstance(cols, int) and rows > 0 and cols > 0:
                sizes.append((rows, cols))
        if not sizes:
            return
        size = (min(r for r, _ in sizes), min(c for _, c in sizes))
        if size != self._size:
            self._size = size
            if self._stream is not None:
                self._input.put_nowait(size)

    async def _write_loop(self, stream: SandboxStream) -> None:
        while True:
            item = await self._input.get()
            if isinstance(item, tuple):
                await stream.resize(*item)
            else:
                self._queued -= len(item)
                self._dropped_input = False
                await stream.write(item)

    # ------------------------------------------------------------------ output

    async def _read_loop(self, stream: SandboxStream) -> None:
        try:
            while chunk := await stream.read():
                self._on_output(chunk)
        finally:
            tail = self._decoder.decode(b"", final=True)
            if tail:
                self._pending.append(tail)
            self._flush()

    def _on_output(self, chunk: bytes) -> None:
        text = self._decoder.decode(chunk)
        if not text:
            return
        self._pending.append(text)
        self._pending_chars += len(text)
        if self._pending_chars >= self._max_chars:
            self._flush()
            return
        if self._flush_handle is not None:
            return
        now = self._loop.time()
        in_bulk = self._last_flush_chars >= BULK_CHARS and now - self._last_flush < self._interval
        if in_bulk:  # a stream of big chunks: at most one message per interval
            self._flush_handle = self._loop.call_later(
                self._last_flush + self._interval - now, self._flush
            )
        else:  # interactive: send on the next loop turn, merging what already arrived
            self._flush_handle = self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        self._last_flush_chars = self._pending_chars
        self._pending_chars = 0
        self._last_flush = self._loop.time()
        self.last_activity = utcnow()
        self._emit(text)

    def _emit(self, text: str) -> None:
        self.read_buffer.append(text)
        for observer in self.observers:
            try:
                observer(text)
            except Exception:
                self.log.exception("claude-pods: output observer failed")
        for client in list(self.clients):
            client.on_pty_read(text)

    # ------------------------------------------------------------------ state

    def set_state(self, state: str, reason: str = "") -> None:
        """Change the state and announce it (``on_state``); the one place states change.

        Once ``terminated`` the terminal is gone for everyone, so a session task that
        finishes a step after the close (say, attaches) must not bring it back to life.
        """
        if self.state == "terminated" or (state, reason) == (self.state, self.reason):
            return
        self.state, self.reason = state, reason
        self._announce()

    def _announce(self) -> None:
        """Tell ``on_state``; its failure is logged, never raised into the session."""
        if self._on_state is None:
            return
        try:
            self._on_state(self)
        except Exception:
            self.log.exception(
                "claude-pods: announcing state %s of terminal %s failed", self.state, self.term_name
            )

    # ------------------------------------------------------------------ status lines

    def _progress(self, line: str) -> None:
        """A dim status line in the terminal itself (the stock tab has no other place)."""
        self._flush()
        self._emit(f"{DIM}[claude-pods] {line}{RESET}\r\n")

    def _fail(self, message: str) -> None:
        self.set_state("failed", message)
        self.log.warning(
            "claude-pods: terminal %s of user %s failed: %s", self.term_name, self.owner, message
        )
        self._flush()
        self._emit(f"\r\n{RED}[claude-pods] {message}{RESET}\r\n")
        self._emit(f"{DIM}[claude-pods] close this terminal and open a new one to retry{RESET}\r\n")

    def _exited(self, status: int) -> None:
        self.set_state("exited", f"exit status {status}")
        self.log.info(
            "claude-pods: terminal %s of user %s: program exited with status %s",
            self.term_name,
            self.owner,
            status,
        )
        self._progress(f"the sandbox program exited with status {status}")
