"""Starting and stopping one local sandbox's bubblewrap process tree.

bubblewrap runs on a PTY (:mod:`.stream`); its options reach it through a memfd, its
``--info-fd`` report gives the sandbox's init (held as a pidfd), and the relay's
"ready" byte says the program is about to run. Stopping hangs up first, then kills,
and waits on pidfds until every process of the sandbox is gone. Nothing here blocks
the event loop. The state of one sandbox lives in its :attr:`Sandbox.extra`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import typing as t
from pathlib import Path

from ..base import Sandbox, SandboxError
from .bwrap import BwrapOptions, bwrap_parts, etc_files
from .stream import PtyProcess, PtyStream

if t.TYPE_CHECKING:
    import logging

    Log = logging.Logger | logging.LoggerAdapter[t.Any]


def _memfd(name: str, data: bytes) -> int:
    """An anonymous in-memory file holding *data*, positioned at its start."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _set_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _read_available(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def _shown(output: bytes, limit: int = 600) -> str:
    """Terminal output as one displayable line (control characters dropped)."""
    text = output.decode("utf-8", "replace")
    text = "".join(c if c.isprintable() else " " for c in text.replace("\r", "").strip())
    text = " ".join(text.split())
    return text[-limit:] if text else "no message"


# ---------------------------------------------------------------------- start


async def spawn(
    sandbox: Sandbox,
    options: BwrapOptions,
    host_ids: tuple[int, int] | None,
    timeout: float,
) -> None:
    """Start bwrap on a PTY and wait until the program is about to run.

    The process is recorded in ``sandbox.extra`` as soon as it exists, so that
    stopping a sandbox that failed to start also ends its processes.
    """
    spec = sandbox.spec
    passed: list[int] = []  # the child's copies; ours are closed once it runs
    kept: list[int] = []  # our read ends, closed when started
    try:
        files = {dest: _memfd(dest, data) for dest, data in etc_files(options).items()}
        passed += files.values()
        info_r, info_w = os.pipe()
        kept.append(info_r)
        passed.append(info_w)
        ready_r, ready_w = info_r, None
        if options.forwarder is not None:
            ready_r, ready_w = os.pipe()
            kept.append(ready_r)
            passed.append(ready_w)
        options = dataclasses.replace(options, files=files, info_fd=info_w, ready_fd=ready_w)
        args, tail = bwrap_parts(spec, options)
        # The options (with the session token) go through a memfd, not the process list.
        args_fd = _memfd("bwrap-args", "".join(f"{a}\0" for a in args).encode())
        passed.append(args_fd)
        try:
            process = PtyProcess.spawn(
                [options.bwrap, "--args", str(args_fd), *tail],
                rows=spec.rows,
                cols=spec.cols,
                pass_fds=passed,
                user=host_ids[0] if host_ids else None,
                group=host_ids[1] if host_ids else None,
            )
        except OSError as e:
            raise SandboxError(
                f"bubblewrap ({options.bwrap}) could not be started: {e.strerror or e}",
                reason="StartFailed",
            ) from None
        finally:
            for fd in passed:
                os.close(fd)
            passed.clear()
        sandbox.extra["process"] = process
        sandbox.extra["pid"] = process.pid
        first = await _until_started(process, ready_r, timeout)
        os.set_blocking(info_r, False)
        head = first if ready_r == info_r else b""
        info = await _read_info(info_r, head, timeout)
    finally:
        for fd in passed + kept:
            os.close(fd)
    child = info.get("child-pid")
    if isinstance(child, int):
        sandbox.extra["child_pid"] = child
        sandbox.extra["pidns"] = info.get("pid-namespace")
        with contextlib.suppress(ProcessLookupError):
            sandbox.extra["init_pidfd"] = os.pidfd_open(child)
    process.exited.add_done_callback(lambda _: _on_exit(sandbox))


async def _read_info(fd: int, head: bytes, timeout: float) -> dict[str, t.Any]:
    """bubblewrap's ``--info-fd`` JSON, read until it parses or the fd closes.

    bwrap writes the object in several writes (one per field), so what is readable
    right after its first byte may be a prefix; reading waits on the event loop.
    """
    loop = asyncio.get_running_loop()
    data = head + _read_available(fd)
    deadline = loop.time() + timeout
    while True:
        try:
            info = json.loads(data or b"{}")
            return info if isinstance(info, dict) else {}
        except ValueError:
            pass
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise SandboxError("bubblewrap's start-up report was incomplete", reason="StartFailed")
        readable: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, _set_once, readable)
        try:
            await asyncio.wait_for(readable, remaining)
        except asyncio.TimeoutError:
            continue
        finally:
            loop.remove_reader(fd)
        more = _read_available(fd)
        if not more:  # EOF: all there is
            try:
                info = json.loads(data or b"{}")
            except ValueError:
                raise SandboxError(
                    "bubblewrap's start-up report was malformed", reason="StartFailed"
                ) from None
            return info if isinstance(info, dict) else {}
        data += more


async def _until_started(process: PtyProcess, fd: int, timeout: float) -> bytes:
    """Wait for the first byte on *fd* (the relay's "ready", or bwrap's info); return it.

    EOF on it, or the process ending first, means bubblewrap or the relay failed:
    their message is in the PTY and becomes the error shown in red.
    """
    loop = asyncio.get_running_loop()
    got: asyncio.Future[bytes] = loop.create_future()

    def readable() -> None:
        try:
            data = os.read(fd, 1)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not got.done():
            got.set_result(data)

    os.set_blocking(fd, False)
    loop.add_reader(fd, readable)
    try:
        waiters: set[asyncio.Future[t.Any]] = {got, process.exited}
        done, _ = await asyncio.wait(
            waiters,
            timeout=timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        loop.remove_reader(fd)
    if got in done and got.result():
        return got.result()
    if not done:
        raise SandboxError(f"the sandbox did not start within {timeout:g}s", reason="StartTimeout")
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(process.exited), 2.0)
    raise SandboxError(
        f"the sandbox could not be started: {_shown(process.drain())}", reason="StartFailed"
    )


def _on_exit(sandbox: Sandbox) -> None:
    """bubblewrap ended: if a signal we did not send killed it, say so."""
    process: PtyProcess = sandbox.extra["process"]
    if sandbox.ended.done() or sandbox.extra.get("stopping"):
        return
    if process.killed_by is not None:
        try:
            sig = signal.Signals(process.killed_by).name
        except ValueError:
            sig = str(process.killed_by)
        sandbox.ended.set_result(f"the sandbox was killed ({sig})")


# ---------------------------------------------------------------------- stop


async def terminate(sandbox: Sandbox, grace: float, log: Log) -> None:
    """Hang up, then kill; wait until every process of the sandbox is gone.

    Never blocks the loop; never raises for "already gone". The sandbox's init is
    killed before bwrap, so that bwrap reaps it (killing bwrap first would orphan it
    to the machine's init). *grace* is the wait after each of the two signals.
    """
    stream: PtyStream | None = sandbox.extra.pop("stream", None)
    if stream is not None:
        await stream.close()
    process: PtyProcess | None = sandbox.extra.get("process")
    init_pidfd: int | None = sandbox.extra.pop("init_pidfd", None)
    if process is not None:
        _hang_up(sandbox, process)
        if not await process.wait(grace):
            if init_pidfd is not None:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(init_pidfd, signal.SIGKILL)
            if not await process.wait(grace):
                process.signal_group(signal.SIGKILL)
                await asyncio.shield(process.exited)
    if init_pidfd is not None:
        await _wait_gone(init_pidfd, log)
    if process is not None:
        process.close()


def _hang_up(sandbox: Sandbox, process: PtyProcess) -> None:
    """``SIGHUP`` as a closed terminal delivers it, so the program can end cleanly.

    A real hang-up reaches the session leader and the foreground job. Here bwrap
    leads the session (signalling it would kill everything at once), so the
    program, a child of the sandbox's init, is signalled directly, through a pidfd
    taken before checking it is still that child (no pid-reuse race).
    """
    process.hang_up()  # the foreground job, when a shell made one
    init = sandbox.extra.get("child_pid")
    if init is None or process.exit_status is not None:
        return
    try:
        children = Path(f"/proc/{init}/task/{init}/children").read_text().split()
    except OSError:
        return
    for pid in children:
        try:
            pidfd = os.pidfd_open(int(pid))
        except (OSError, ValueError):
            continue
        try:
            stat_line = Path(f"/proc/{pid}/stat").read_text()
            if int(stat_line.rsplit(")", 1)[1].split()[1]) == init:
                signal.pidfd_send_signal(pidfd, signal.SIGHUP)
                signal.pidfd_send_signal(pidfd, signal.SIGCONT)
        except (OSError, ValueError, IndexError):
            pass
        finally:
            os.close(pidfd)


async def _wait_gone(pidfd: int, log: Log) -> None:
    """Until the sandbox's init, and so its whole PID namespace, has exited.

    It is killed first in case it still runs: the kernel kills every process of a
    PID namespace when its init dies, and only reports the init's exit after that.
    """
    loop = asyncio.get_running_loop()
    gone: asyncio.Future[None] = loop.create_future()

    def exited() -> None:
        if not gone.done():
            gone.set_result(None)

    try:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        loop.add_reader(pidfd, exited)
        try:
            await asyncio.wait_for(gone, 10.0)
        except asyncio.TimeoutError:
            log.error("claude-pods: a sandbox's processes did not exit within 10 s")
        finally:
            loop.remove_reader(pidfd)
    finally:
        os.close(pidfd)
