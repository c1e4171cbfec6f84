"""A sandbox program starts with default signal dispositions and nothing blocked.

Whatever started the Jupyter server (``nohup``, a service manager) may ignore SIGHUP or
block signals; both survive ``exec``. Inherited, a sandbox would ignore the hang-up that
ends it when its terminal closes.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator

import pytest

from jupyter_claude_pods.sandbox.local.stream import PtyProcess

PROGRAM = ["sh", "-c", "grep -E '^Sig(Ign|Blk):' /proc/self/status; echo done"]


@pytest.fixture
def server_ignores_hangups() -> Iterator[None]:
    """The test process as a server under ``nohup`` with SIGINT blocked."""
    old = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        signal.signal(signal.SIGHUP, old)


def mask(text: str, name: str) -> int:
    for line in text.splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1], 16)
    raise AssertionError(f"no {name} in {text!r}")


@pytest.mark.usefixtures("server_ignores_hangups")
async def test_program_gets_default_dispositions_and_an_empty_mask() -> None:
    process = PtyProcess.spawn(PROGRAM, rows=24, cols=80)
    output = b""
    loop = asyncio.get_running_loop()
    readable = asyncio.Event()
    assert process.master is not None
    loop.add_reader(process.master, readable.set)
    try:
        async with asyncio.timeout(10):
            while b"done" not in output:
                await readable.wait()
                readable.clear()
                chunk = process.drain()
                if not chunk and process.exited.done():
                    break
                output += chunk
    finally:
        loop.remove_reader(process.master)
    await asyncio.wait_for(process.exited, 10)
    process.close()
    text = output.decode()
    ignored, blocked = mask(text, "SigIgn"), mask(text, "SigBlk")
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGPIPE):
        assert not ignored & (1 << (sig - 1)), f"{sig.name} ignored: {text}"
    assert not blocked & (1 << (signal.SIGINT - 1)), f"SIGINT blocked: {text}"
