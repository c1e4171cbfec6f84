"""Local (bubblewrap) sandboxes: start-up time and memory, against the same programs unsandboxed.

    .venv/bin/python benchmarks/local_sandbox.py [-n 15] [--idle 5]

Measured in one run, each figure next to its baseline (the same program on a plain
PTY, no sandbox), because absolute times depend on the machine:

* **start → first byte / → bash prompt**: ``LocalBackend.start()`` + ``connect()``
  (session directory, seeded home, bwrap, the proxy relay) until the program's first
  output byte and until bash's prompt, versus ``bash`` spawned on a PTY directly.
* **start → Claude Code ready**: the default sandbox program (the launcher, then the
  pinned CLI) until the CLI's first output byte and until its input prompt is drawn
  (the prompt character U+276F), versus the same CLI with the same seeded home run
  on a PTY directly.
* **memory per idle sandbox**: proportional set size (PSS, so shared pages are split
  fairly) of every process in a sandbox, summed, with *k* sandboxes idle at the Claude
  Code prompt at once; versus one unsandboxed CLI idle at its prompt; and an idle bash
  sandbox (what the sandbox itself costs).

The embedded proxy runs (a placeholder key, an upstream that is never contacted), so
the relay starts as in production. Requires bwrap and the CLI (``scripts/test.sh``
installs both).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pty
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jupyter_claude_pods.policy import find_claude, sandbox_env, seed_home
from jupyter_claude_pods.sandbox.base import Sandbox, SandboxStream
from jupyter_claude_pods.sandbox.local import LocalBackend
from jupyter_claude_pods.sandbox.spec import SandboxSpec

ANSI = re.compile(
    r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>]"
)
CLAUDE_READY = "\u276f"  # the input prompt character, drawn once the CLI is ready
BASH_PROMPT = "$ "
TIMEOUT = 30.0


class BenchError(RuntimeError):
    """Something could not be measured (a program died or never got ready)."""


# ----------------------------------------------------------------- reading output


async def read_until(
    read: Callable[[], Awaitable[bytes]], needle: str, began: float
) -> tuple[float, float]:
    """(ms to the first byte, ms to ``needle`` in the ANSI-stripped output)."""
    first: float | None = None
    text = ""
    try:
        async with asyncio.timeout(TIMEOUT):
            while True:
                chunk = await read()
                if not chunk:
                    raise BenchError(f"output ended before {needle!r}: {text[-400:]!r}")
                if first is None:
                    first = time.perf_counter()
                text += chunk.decode("utf-8", "replace")
                if needle in ANSI.sub("", text):
                    return (first - began) * 1000, (time.perf_counter() - began) * 1000
    except TimeoutError:
        raise BenchError(f"no {needle!r} in {TIMEOUT} s: {ANSI.sub('', text)[-600:]!r}") from None


class PlainPty:
    """A program on a PTY with no sandbox: the baseline."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str) -> None:
        self.argv, self.env, self.cwd = argv, env, cwd
        self.proc: asyncio.subprocess.Process | None = None
        self.master = -1
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    async def start(self) -> None:
        master, slave = pty.openpty()
        os.set_blocking(master, False)
        self.master = master
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
        )
        os.close(slave)
        asyncio.get_running_loop().add_reader(master, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self.master)
        self.queue.put_nowait(data)

    async def read(self) -> bytes:
        return await self.queue.get()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self.master)
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        with contextlib.suppress(OSError):
            os.close(self.master)


# ----------------------------------------------------------------- memory


def children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def tree_pss_kib(root: int) -> int:
    """Summed PSS (KiB) of ``root`` and all its descendants."""
    kids = children_map()
    todo, total = [root], 0
    while todo:
        pid = todo.pop()
        todo.extend(kids.get(pid, []))
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
    return total


# ----------------------------------------------------------------- scenarios


class Bench:
    def __init__(self, base: Path, claude: str) -> None:
        self.base, self.claude = base, claude
        self.course = base / "course"
        self.course.mkdir()
        (self.course / "README.md").write_text("A course.\n")
        self.course.chmod(0o755)
        self.count = 0

    def backend(self, command: list[str] | None) -> LocalBackend:
        kwargs: dict[str, object] = {
            "home_base": str(self.base / "state"),
            "course_root": str(self.course),
        }
        if command is not None:
            kwargs.update(command=command, extra_env={"PS1": BASH_PROMPT})
        return LocalBackend(**kwargs)

    async def sandboxed(
        self, backend: LocalBackend, needle: str
    ) -> tuple[float, float, Sandbox, SandboxStream]:
        self.count += 1
        spec = SandboxSpec(
            session_id=f"bench{self.count:04d}",
            user="bench",
            terminal="1",
            env={"ANTHROPIC_AUTH_TOKEN": "bench-session-token-placeholder"},
        )
        began = time.perf_counter()
        sandbox = await backend.start(spec, lambda _line: None)
        stream = await backend.connect(sandbox)
        first, ready = await read_until(stream.read, needle, began)
        return first, ready, sandbox, stream

    def plain_env(self, home: Path) -> dict[str, str]:
        return {
            "PATH": "/usr/bin:/bin",
            "HOME": str(home),
            "TERM": "xterm-256color",
            "PS1": BASH_PROMPT,
            **sandbox_env(),
            "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
            "ANTHROPIC_AUTH_TOKEN": "bench-session-token-placeholder",
        }

    async def plain(self, argv: list[str], needle: str) -> tuple[float, float, PlainPty]:
        self.count += 1
        home = self.base / f"plain-home-{self.count}"
        home.mkdir()
        seed_home(home, str(self.course))
        proc = PlainPty(argv, self.plain_env(home), str(self.course))
        began = time.perf_counter()
        await proc.start()
        first, ready = await read_until(proc.read, needle, began)
        return first, ready, proc


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):7.1f} ({min(values):.1f} to {max(values):.1f})"


async def main(n: int, idle: int) -> None:
    claude = find_claude()
    if claude is None or shutil.which("bwrap") is None:
        raise SystemExit("needs bwrap and the Claude Code CLI (run scripts/test.sh once)")
    os.environ["CLAUDE_PODS_CLAUDE_BIN"] = claude
    os.environ["ANTHROPIC_API_KEY"] = "bench-upstream-key-placeholder"
    os.environ["CLAUDE_PODS_UPSTREAM_URL"] = "http://127.0.0.1:9"  # never contacted
    base = Path(tempfile.mkdtemp(prefix="cpbench-", dir="/tmp"))
    base.chmod(0o711)
    bench = Bench(base, claude)
    bash_argv = ["bash", "--norc", "--noprofile", "-i"]
    claude_argv = [claude, "--tools", "Read,Glob,Grep"]
    bash_backend = bench.backend(bash_argv)
    claude_backend = bench.backend(None)
    rows: dict[str, list[tuple[float, float]]] = {}
    try:
        await bash_backend.startup()
        await claude_backend.startup()
        # Warm the page cache and the embedded proxy once per kind.
        for backend, needle in ((bash_backend, BASH_PROMPT), (claude_backend, CLAUDE_READY)):
            *_, sandbox, stream = await bench.sandboxed(backend, needle)
            await stream.close()
            await backend.stop(sandbox)
        for argv, needle in ((bash_argv, BASH_PROMPT), (claude_argv, CLAUDE_READY)):
            *_, proc = await bench.plain(argv, needle)
            await proc.close()

        for _ in range(n):  # interleaved, so drift hits both sides alike
            for label, argv, backend, needle in (
                ("bash", bash_argv, bash_backend, BASH_PROMPT),
                ("claude", claude_argv, claude_backend, CLAUDE_READY),
            ):
                first, ready, proc = await bench.plain(argv, needle)
                await proc.close()
                rows.setdefault(f"{label} plain", []).append((first, ready))
                first, ready, sandbox, stream = await bench.sandboxed(backend, needle)
                await stream.close()
                await backend.stop(sandbox)
                rows.setdefault(f"{label} sandbox", []).append((first, ready))

        print(f"n={n}; milliseconds, median (min to max)")
        print(f"{'':16} {'first byte':>22} {'ready':>22}")
        for label, values in rows.items():
            print(
                f"{label:16} {summary([f for f, _ in values]):>22} "
                f"{summary([r for _, r in values]):>22}"
            )
        for label in ("bash", "claude"):
            plain = statistics.median(r for _, r in rows[f"{label} plain"])
            boxed = statistics.median(r for _, r in rows[f"{label} sandbox"])
            print(f"{label}: ready sandbox/plain = {boxed / plain:.2f}x (+{boxed - plain:.1f} ms)")

        # Memory: `idle` Claude Code sandboxes idle at the prompt at once.
        held: list[tuple[Sandbox, SandboxStream]] = []
        for _ in range(idle):
            *_, sandbox, stream = await bench.sandboxed(claude_backend, CLAUDE_READY)
            held.append((sandbox, stream))
        await asyncio.sleep(2)  # settle: let the CLI finish its start-up work (not a sync point)
        per_claude = [tree_pss_kib(int(s.extra["pid"])) for s, _ in held]
        for sandbox, stream in held:
            await stream.close()
            await claude_backend.stop(sandbox)
        # The same number of unsandboxed CLIs at once: PSS splits the pages they share
        # (the CLI binary) among them, so a lone process would look bigger.
        plain_held = []
        for _ in range(idle):
            *_, plain_proc = await bench.plain(claude_argv, CLAUDE_READY)
            plain_held.append(plain_proc)
        await asyncio.sleep(2)
        per_plain = [tree_pss_kib(p.proc.pid) for p in plain_held if p.proc is not None]
        for plain_proc in plain_held:
            await plain_proc.close()
        *_, sandbox, stream = await bench.sandboxed(bash_backend, BASH_PROMPT)
        bash_sandbox = tree_pss_kib(int(sandbox.extra["pid"]))
        await stream.close()
        await bash_backend.stop(sandbox)
        *_, plain_bash = await bench.plain(bash_argv, BASH_PROMPT)
        assert plain_bash.proc is not None
        bash_plain = tree_pss_kib(plain_bash.proc.pid)
        await plain_bash.close()
        mib = 1024
        print(f"memory (PSS), {idle} idle Claude Code sandboxes at once:")
        print(
            f"  per Claude Code sandbox  {statistics.median(per_claude) / mib:6.1f} MiB "
            f"(min {min(per_claude) / mib:.1f}, max {max(per_claude) / mib:.1f})"
        )
        print(
            f"  unsandboxed Claude Code  {statistics.median(per_plain) / mib:6.1f} MiB "
            f"({idle} at once)"
        )
        print(
            f"  idle bash sandbox        {bash_sandbox / mib:6.1f} MiB (bash alone {bash_plain / mib:.1f} MiB)"
        )
    finally:
        await bash_backend.shutdown()
        await claude_backend.shutdown()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=15, help="measurements per row")
    parser.add_argument("--idle", type=int, default=5, help="idle sandboxes for the memory figure")
    args = parser.parse_args()
    asyncio.run(main(args.n, args.idle))
