"""A process on a pseudo-terminal, driven from the event loop with no thread at all.

* The PTY master is non-blocking and watched with ``loop.add_reader``; writes that
  would block wait with ``loop.add_writer``. Reading pauses while too much output is
  buffered, so a flood blocks the program (as a real terminal does) instead of the
  server's memory.
* The child is reaped through a pidfd (``os.pidfd_open`` + ``loop.add_reader``, then a
  non-blocking ``waitpid``). asyncio's own child watchers on Python 3.11 use a thread
  per child, and ``SIGCHLD`` handlers race with other libraries' children.
* The child gets the PTY as its controlling terminal in a new session (``setsid`` +
  ``TIOCSCTTY``), so job control, Ctrl-C and ``SIGWINCH`` behave as in any terminal.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import os
import pty
import signal
import struct
import subprocess
import termios
from collections.abc import Sequence
from typing import Any

from ..base import SandboxStream

#: Bytes read from the PTY at once.
CHUNK = 64 * 1024
#: Output buffered (unread by the terminal layer) before reading pauses.
HIGH_WATER = 256 * 1024
#: After end of output, how long to wait for the exit status before giving up on it.
EXIT_WAIT = 5.0


def set_size(fd: int, rows: int, cols: int) -> None:
    """``TIOCSWINSZ``: the kernel tells the foreground process group with ``SIGWINCH``."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


#: Signals a terminal program expects at their default action. A server started under
#: ``nohup`` (or a service manager that ignores SIGHUP/SIGINT) would otherwise pass the
#: ignored disposition down into every sandbox, and hanging up a sandbox would not end it.
_RESET_SIGNALS = tuple(
    sig
    for sig in (
        signal.SIGHUP,
        signal.SIGINT,
        signal.SIGQUIT,
        signal.SIGTERM,
        signal.SIGPIPE,
        signal.SIGXFSZ,
        signal.SIGTSTP,
        signal.SIGTTIN,
        signal.SIGTTOU,
    )
)


def _take_terminal() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Make stdin (the PTY) the controlling terminal of the new session, with default
    signal dispositions and no blocked signals (both survive exec)."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    for sig in _RESET_SIGNALS:
        try:
            signal.signal(sig, signal.SIG_DFL)
        except ValueError:  # not forked from the main thread: the exec'd program decides
            break


class PtyProcess:
    """A child process whose stdin/stdout/stderr is a new PTY; reaped without threads."""

    def __init__(self, popen: subprocess.Popen[bytes], master: int) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.master: int | None = master
        #: ``128 + n`` when ended by signal ``n`` (as shells report it).
        self.exit_status: int | None = None
        #: The signal that ended the process itself, if one did.
        self.killed_by: int | None = None
        self._loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[int] = self._loop.create_future()
        self._pidfd: int | None = os.pidfd_open(self.pid)
        self._loop.add_reader(self._pidfd, self._reap)

    @classmethod
    def spawn(
        cls,
        argv: Sequence[str],
        *,
        rows: int,
        cols: int,
        pass_fds: Sequence[int] = (),
        user: int | None = None,
        group: int | None = None,
    ) -> PtyProcess:
        """Start *argv* on a new PTY of size *rows* x *cols*.

        The environment is empty (the program sets its own) and the working directory
        is ``/``. With *user*, the child drops to that uid/gid (and no supplementary
        groups) before exec; only root may ask for it. Raises ``OSError``.
        """
        master, slave = pty.openpty()
        try:
            set_size(slave, rows, cols)
            ids: dict[str, Any] = {}
            if user is not None:
                ids = {"user": user, "group": group, "extra_groups": []}
            popen = subprocess.Popen(
                list(argv),
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env={},
                cwd="/",
                pass_fds=tuple(pass_fds),
                close_fds=True,
                start_new_session=True,
                preexec_fn=_take_terminal,  # noqa: PLW1509 - one ioctl, no locks taken
                **ids,
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        return cls(popen, master)

    def _reap(self) -> None:
        if self.exit_status is not None:
            return
        code = self.popen.poll()  # waitpid(pid, WNOHANG), recorded in the Popen
        if code is None:
            return
        self._close_pidfd()
        if code < 0:
            self.killed_by = -code
            code = 128 - code
        self.exit_status = code
        self.exited.set_result(code)

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    def signal_group(self, sig: int) -> None:
        """Send *sig* to the process group (the session) unless already reaped.

        Before the reap the pid, and so the group id, cannot have been reused.
        """
        if self.exit_status is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def hang_up(self) -> None:
        """What closing a real terminal does: ``SIGHUP`` (and ``SIGCONT``) to the program
        in its foreground, so a shell ends cleanly."""
        if self.exit_status is not None or self.master is None:
            return
        try:
            foreground = os.tcgetpgrp(self.master)  # in our PID namespace's numbering
        except OSError:
            return
        if foreground > 0 and foreground != self.pid:
            for sig in (signal.SIGHUP, signal.SIGCONT):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(foreground, sig)

    async def wait(self, timeout: float) -> bool:
        """Whether the process exited within *timeout* seconds."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.exited), timeout)
        return self.exited.done()

    def close(self) -> None:
        """Close the PTY master (after the child is gone: it also hangs up the terminal)."""
        if self.master is not None:
            os.close(self.master)
            self.master = None

    def drain(self, limit: int = 64 * 1024) -> bytes:
        """Output already waiting in the PTY (e.g. bwrap's error message), without blocking."""
        chunks: list[bytes] = []
        size = 0
        while self.master is not None and size < limit:
            try:
                data = os.read(self.master, CHUNK)
            except OSError:  # EAGAIN: nothing more now; EIO: nobody holds the terminal
                break
            if not data:
                break
            chunks.append(data)
            size += len(data)
        return b"".join(chunks)


class PtyStream(SandboxStream):
    """The terminal layer's byte stream over a :class:`PtyProcess`'s PTY master.

    ``read()`` returns ``b""`` only once the exit status is known, so the terminal can
    tell a program that exited from a sandbox that was killed.
    """

    def __init__(self, process: PtyProcess) -> None:
        assert process.master is not None
        self._process = process
        self._fd = process.master
        self._loop = asyncio.get_running_loop()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._eof = False
        self._closed = False
        self._reading = False
        self._read_waiter: asyncio.Future[None] | None = None
        self._write_waiter: asyncio.Future[None] | None = None
        self.exit_status = process.exit_status
        process.exited.add_done_callback(self._on_exit)
        self._resume_reading()

    def _on_exit(self, future: asyncio.Future[int]) -> None:
        if not future.cancelled():
            self.exit_status = future.result()

    # ------------------------------------------------------------------ reading

    def _resume_reading(self) -> None:
        if not self._reading and not self._eof and not self._closed:
            self._loop.add_reader(self._fd, self._on_readable)
            self._reading = True

    def _pause_reading(self) -> None:
        if self._reading:
            self._loop.remove_reader(self._fd)
            self._reading = False

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, CHUNK)
        except BlockingIOError:
            return
        except OSError:  # EIO: every process holding the terminal has exited
            data = b""
        if not data:
            self._eof = True
            self._pause_reading()
        else:
            self._chunks.append(data)
            self._buffered += len(data)
            if self._buffered >= HIGH_WATER:
                self._pause_reading()
        self._wake_reader()

    def _wake_reader(self) -> None:
        if self._read_waiter is not None and not self._read_waiter.done():
            self._read_waiter.set_result(None)

    async def read(self) -> bytes:
        while not self._chunks and not self._eof and not self._closed:
            self._read_waiter = self._loop.create_future()
            try:
                await self._read_waiter
            finally:
                self._read_waiter = None
        if self._chunks:
            data = b"".join(self._chunks)
            self._chunks.clear()
            self._buffered = 0
            self._resume_reading()
            return data
        if self._eof and not self._closed:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._process.exited), EXIT_WAIT)
        return b""

    # ------------------------------------------------------------------ writing

    def _on_writable(self) -> None:
        self._loop.remove_writer(self._fd)
        if self._write_waiter is not None and not self._write_waiter.done():
            self._write_waiter.set_result(None)

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self._closed:
            try:
                written = os.write(self._fd, view)
            except BlockingIOError:
                self._write_waiter = self._loop.create_future()
                self._loop.add_writer(self._fd, self._on_writable)
                try:
                    await self._write_waiter
                finally:
                    self._loop.remove_writer(self._fd)
                    self._write_waiter = None
                continue
            except OSError:  # EIO: the program is gone; read() reports the end
                return
            view = view[written:]

    async def resize(self, rows: int, cols: int) -> None:
        if not self._closed:
            with contextlib.suppress(OSError):
                set_size(self._fd, rows, cols)

    async def close(self) -> None:
        """Stop using the PTY (idempotent); the master itself belongs to the process."""
        if self._closed:
            return
        self._closed = True
        self._pause_reading()
        self._wake_reader()
        if self._write_waiter is not None:
            self._loop.remove_writer(self._fd)
            if not self._write_waiter.done():
                self._write_waiter.set_result(None)
