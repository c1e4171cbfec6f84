"""Inside a local sandbox: relay 127.0.0.1:PORT to the key proxy's Unix socket.

Why it exists: a local sandbox has its own network namespace holding only ``lo``, so it
can reach no port of the host, the key proxy's included. The proxy's Unix socket is
bound into the sandbox instead, and Claude Code, which only speaks TCP, is pointed at
``ANTHROPIC_BASE_URL=http://127.0.0.1:PORT``: this relay copies bytes between the two
and interprets nothing (every check is the proxy's). If the proxy cannot be reached it
answers a clear HTTP 502 in the Messages API's error shape, so the CLI shows why.

It runs with the sandbox's system ``python3 -I -S`` and the standard library only; the
Jupyter server's virtualenv is not visible in the sandbox. Two ways to run it::

    python3 -I forwarder.py --listen 8787 --unix /run/claude-pods/proxy.sock
        relay in the foreground (for debugging).

    python3 -I -S forwarder.py [--listen 8787 --unix SOCK] --ready-fd N -- PROGRAM ARGS...
        what the sandbox runs: listen (so the port is open before PROGRAM starts), leave
        the relay running in the background as a daemon adopted by the sandbox's init,
        check PROGRAM can be found, write one byte to fd N (the server's "ready"
        signal), close it, and exec PROGRAM, which keeps this process id and the terminal.

The listening socket is created before anything slow (the ``asyncio`` import happens in
the daemon only), so the program never starts before the port is open.
"""

from __future__ import annotations

import os
import signal
import socket
import sys

# ``typing`` and ``asyncio`` are not imported on the start-up path: every millisecond
# here delays the terminal's prompt. Type checkers treat this name as always true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio
    from typing import NoReturn

USAGE = "usage: forwarder.py [--listen PORT --unix SOCKET] [--ready-fd FD] [-- PROGRAM ARGS...]"
#: Connections relayed at once; more wait in the listen backlog.
MAX_CONNECTIONS = 256
CHUNK = 64 * 1024
UNREACHABLE = (
    b'{"type":"error","error":{"type":"api_error","message":"The Jupyter server\'s key '
    b"proxy is not reachable from this sandbox (was the server stopped or restarted?). "
    b'Open a new terminal."}}'
)


def _fail(message: str, status: int = 2) -> NoReturn:
    sys.stderr.write(f"claude-pods: {message}\n")
    sys.stderr.flush()
    os._exit(status)


def _parse(argv: list[str]) -> tuple[int | None, str | None, int | None, list[str]]:
    port: int | None = None
    unix: str | None = None
    ready: int | None = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return port, unix, ready, argv[i + 1 :]
        if arg in ("--listen", "--unix", "--ready-fd") and i + 1 < len(argv):
            value = argv[i + 1]
            try:
                if arg == "--listen":
                    port = int(value)
                elif arg == "--ready-fd":
                    ready = int(value)
                else:
                    unix = value
            except ValueError:
                _fail(f"bad value for {arg}: {value!r}\n{USAGE}")
            i += 2
            continue
        _fail(f"unexpected argument {arg!r}\n{USAGE}")
    return port, unix, ready, []


def _listen(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen(128)
    except OSError as e:
        _fail(f"the key proxy relay cannot listen on 127.0.0.1:{port}: {e.strerror}")
    return sock


def _find(program: str) -> str | None:
    """``PROGRAM`` resolved like ``execvp`` would (without importing ``shutil``)."""
    if "/" in program:
        return program if os.access(program, os.X_OK) else None
    for directory in os.environ.get("PATH", "/usr/bin:/bin").split(":"):
        candidate = os.path.join(directory or ".", program)  # noqa: PTH118 - no pathlib import
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):  # noqa: PTH113
            return candidate
    return None


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


async def _discard(reader: asyncio.StreamReader) -> None:
    while await reader.read(CHUNK):
        pass


async def _serve(sock: socket.socket, path: str) -> None:
    import asyncio  # at run time, and only in the daemon
    import contextlib

    slots = asyncio.Semaphore(MAX_CONNECTIONS)

    async def relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        async with slots:
            try:
                proxy_r, proxy_w = await asyncio.open_unix_connection(path)
            except OSError:
                head = (
                    "HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\n"
                    f"x-should-retry: false\r\nContent-Length: {len(UNREACHABLE)}\r\n"
                    "Connection: close\r\n\r\n"
                )
                client_w.write(head.encode("ascii") + UNREACHABLE)
                with contextlib.suppress(OSError, asyncio.TimeoutError):
                    await client_w.drain()
                    client_w.write_eof()
                    # Closing with the request unread would reset the connection and
                    # could destroy the answer before the client reads it.
                    await asyncio.wait_for(_discard(client_r), 2.0)
                client_w.close()
                return
            try:
                await asyncio.gather(_pump(client_r, proxy_w), _pump(proxy_r, client_w))
            finally:
                proxy_w.close()
                client_w.close()

    server = await asyncio.start_server(relay, sock=sock, limit=CHUNK)
    async with server:
        await server.serve_forever()


def _run_relay(sock: socket.socket, path: str) -> None:
    import asyncio  # at run time, and only in the daemon
    import contextlib

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(sock, path))


def _daemonize(sock: socket.socket, path: str, keep_out: int | None) -> None:
    """Fork the relay off as a grandchild (adopted by the sandbox's init, which reaps it).

    The daemon leaves the terminal's session and closes the terminal, so it never holds
    the PTY open nor gets the terminal's signals.
    """
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
        return
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
        if keep_out is not None:
            os.close(keep_out)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        _run_relay(sock, path)
    finally:
        os._exit(0)


def main(argv: list[str]) -> None:
    port, path, ready, program = _parse(argv)
    if (port is None) != (path is None):
        _fail(f"--listen and --unix go together\n{USAGE}")
    if not program:
        if port is None or path is None:
            _fail(USAGE)
        _run_relay(_listen(port), path)
        return
    if port is not None and path is not None:
        sock = _listen(port)
        _daemonize(sock, path, ready)
        sock.close()
    found = _find(program[0])
    if found is None:
        _fail(f"{program[0]}: command not found", 127)
    if ready is not None:
        os.write(ready, b"1")
        os.close(ready)
    # Python ignores SIGPIPE and SIGXFSZ, and whoever started us may ignore hang-ups
    # (nohup) or block signals; an exec'd program would inherit all of that.
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    try:
        os.execv(found, program)  # noqa: S606 - the sandbox's own program, argv as given
    except OSError as e:
        _fail(f"cannot run {program[0]}: {e.strerror}", 126)


if __name__ == "__main__":
    main(sys.argv[1:])
