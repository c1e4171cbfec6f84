"""The in-sandbox relay (``forwarder.py``), run here as the sandbox runs it.

It is started with the system ``python3 -I -S``; the ready/exec mode runs inside a
PID namespace (bubblewrap, host network shared) so the relay daemon dies with it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_claude_pods.sandbox.local import forwarder

from .conftest import require_bwrap

SCRIPT = str(Path(forwarder.__file__))
PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cpfw-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def echo_socket(io_loop: Any, short_dir: Path) -> Iterator[Path]:
    """A Unix socket server that echoes each connection back, half-close aware."""
    path = short_dir / "proxy.sock"

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def start() -> asyncio.AbstractServer:
        return await asyncio.start_unix_server(echo, str(path))

    server = io_loop.run_sync(start)
    yield path
    server.close()


async def connect(port: int, timeout: float = 10.0) -> tuple[Any, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.02)  # the relay is starting: poll until it listens


async def test_relays_bytes_both_ways(echo_socket: Path) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        PYTHON, "-I", "-S", SCRIPT, "--listen", str(port), "--unix", str(echo_socket)
    )
    try:
        reader, writer = await connect(port)
        payload = os.urandom(300_000)
        writer.write(payload)
        writer.write_eof()  # the echo server ends when it sees our end
        assert await asyncio.wait_for(reader.read(), 10) == payload
        writer.close()
        # Several connections at once.
        pairs = [await connect(port) for _ in range(5)]
        for i, (_r, w) in enumerate(pairs):
            w.write(f"hello {i}".encode())
            w.write_eof()
        answers = [await asyncio.wait_for(r.read(), 10) for r, _w in pairs]
        assert answers == [f"hello {i}".encode() for i in range(5)]
    finally:
        proc.terminate()
        await proc.wait()


async def test_unreachable_proxy_gets_a_clear_502(short_dir: Path) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        PYTHON, "-I", "-S", SCRIPT, "--listen", str(port), "--unix", str(short_dir / "gone.sock")
    )
    try:
        reader, writer = await connect(port)
        writer.write(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 10)
        assert answer.startswith(b"HTTP/1.1 502 ")
        assert b"x-should-retry: false" in answer
        assert b"key proxy is not reachable" in answer
        writer.close()
    finally:
        proc.terminate()
        await proc.wait()


async def run_wrapped(*args: str, short_dir: Path) -> tuple[int, bytes, bytes]:
    """Run the relay in ready/exec mode in a PID namespace; (status, ready bytes, output)."""
    require_bwrap()
    ready_r, ready_w = os.pipe()
    proc = await asyncio.create_subprocess_exec(
        "bwrap", "--dev-bind", "/", "/", "--unshare-pid", "--die-with-parent",
        "--", PYTHON, "-I", "-S", SCRIPT, *args[:-1], "--ready-fd", str(ready_w), "--",
        "/bin/sh", "-c", args[-1],
        pass_fds=(ready_w,),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    os.close(ready_w)
    output, _ = await asyncio.wait_for(proc.communicate(), 30)
    with os.fdopen(ready_r, "rb") as ready:
        signal = ready.read()
    return proc.returncode or 0, signal, output


async def test_ready_then_exec_with_the_relay_listening(echo_socket: Path, short_dir: Path) -> None:
    port = free_port()
    program = (
        f'python3 -c \'import socket; s = socket.create_connection(("127.0.0.1", {port}), 5); '
        's.sendall(b"ping"); s.shutdown(socket.SHUT_WR); print(s.recv(10).decode())\'; '
        "grep SigIgn /proc/self/status; echo pid=$$; exit 3"
    )
    status, ready, output = await run_wrapped(
        "--listen", str(port), "--unix", str(echo_socket), program, short_dir=short_dir
    )
    text = output.decode()
    assert status == 3, text
    assert ready == b"1"
    assert "ping" in text  # the relay was up before the program started
    assert "SigIgn:\t0000000000000000" in text  # Python's ignored SIGPIPE is not inherited
    assert "pid=2" in text  # the program replaced the relay's process (bwrap's init is 1)


async def test_missing_program_fails_before_ready(short_dir: Path) -> None:
    require_bwrap()
    ready_r, ready_w = os.pipe()
    proc = await asyncio.create_subprocess_exec(
        "bwrap", "--dev-bind", "/", "/", "--unshare-pid", "--die-with-parent",
        "--", PYTHON, "-I", "-S", SCRIPT, "--ready-fd", str(ready_w), "--", "no-such-program-x",
        pass_fds=(ready_w,),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    os.close(ready_w)
    output, _ = await asyncio.wait_for(proc.communicate(), 30)
    with os.fdopen(ready_r, "rb") as ready:
        assert ready.read() == b""
    assert proc.returncode == 127
    assert b"no-such-program-x: command not found" in output


@pytest.mark.parametrize("args", [["--listen", "x"], ["--listen", "1"], ["--bogus"], []])
async def test_bad_arguments(args: list[str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        PYTHON, "-I", "-S", SCRIPT, *args, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 2
    assert b"usage: forwarder.py" in err
