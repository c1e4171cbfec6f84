"""Terminal benchmark: claude-pods (sandbox terminal over a Kubernetes exec stream) versus
the stock local terminado terminal, measured in one run on this machine.

Usage::

    .venv/bin/python benchmarks/terminals.py [--quick] [--strict] [--output PATH]
    .venv/bin/python benchmarks/terminals.py --help      # all options

Arms (every server is an OS process of its own, on 127.0.0.1 only):

* ``baseline``: ``jupyter server`` with only ``jupyter_server_terminals`` (terminado, a
  local PTY running ``bash --norc --noprofile -i``);
* ``claude-pods``: ``jupyter server`` with ``jupyter_claude_pods`` (``SandboxTerminalManager``,
  Kubernetes backend) talking to the fake Kubernetes API of ``tests/fakes`` running in a
  third process (``benchmarks/fake_kube_server.py``), whose exec sessions are local PTYs
  running the same bash;
* ``direct`` (attribution only): the fake API's exec WebSocket (``v5.channel.k8s.io``) read
  straight by the benchmark client, without Jupyter.

Measurements: output throughput of a large ``cat``; keystroke echo latency at a quiet
prompt; N terminals typing at once (echo latency, server memory per terminal). Results
go to ``benchmarks/results/terminals.json`` and a markdown table on stdout.
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import codecs
import contextlib
import dataclasses
import functools
import json
import math
import os
import platform
import random
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results" / "terminals.json"
SHELL = ["bash", "--norc", "--noprofile", "-i"]
PROMPT = "$ "
END_MARK = "BENCH-END-2"
END_COMMAND = "echo BENCH-END-$((1+1))"  # the echoed command line never contains END_MARK
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\x1b[=>]")
FAILED_MARK = "\x1b[1;31m[claude-pods]"  # how SandboxTerminal reports a failed sandbox
CLK_TCK = os.sysconf("SC_CLK_TCK")
MB = 1_000_000


class BenchError(RuntimeError):
    """The benchmark could not measure something (a server died, a timeout hit)."""


# --------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class Sizes:
    """How much work each measurement does."""

    file_mb: int
    throughput_repeats: int
    echo_samples: int
    echo_warmup: int
    echo_gap: float  # quiet time between samples (longer than the 5 ms coalescing window)
    fast_samples: int  # back-to-back keystrokes (no quiet gap)
    terminals: int
    type_seconds: float
    type_interval: float
    deadline: float  # the whole run


FULL = Sizes(
    file_mb=50,
    throughput_repeats=3,
    echo_samples=300,
    echo_warmup=20,
    echo_gap=0.02,
    fast_samples=100,
    terminals=200,
    type_seconds=10.0,
    type_interval=0.1,
    deadline=900.0,
)
QUICK = Sizes(
    file_mb=5,
    throughput_repeats=5,  # a 5 MB cat takes ~0.1 s: more repeats against jitter
    echo_samples=50,
    echo_warmup=10,
    echo_gap=0.02,
    fast_samples=30,
    terminals=20,
    type_seconds=3.0,
    type_interval=0.1,
    deadline=170.0,
)


# --------------------------------------------------------------------------- /proc


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (index 0 is the state)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def proc_identity(pid: int) -> tuple[int, int] | None:
    """(ppid, start time in ticks) of a live process; the start time tells PID reuse apart."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20:
        return None
    return int(fields[1]), int(fields[19])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far (0 if it is gone)."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 13:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid: int) -> int:
    """VmRSS of a process in KiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(root: int) -> dict[int, int]:
    """Every live descendant of ``root`` as {pid: start time}."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        ident = proc_identity(int(entry.name))
        if ident is None:
            continue
        children.setdefault(ident[0], []).append(int(entry.name))
        starts[int(entry.name)] = ident[1]
    found: dict[int, int] = {}
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found[child] = starts[child]
                todo.append(child)
    return found


def kill_if_same(pid: int, start: int) -> None:
    """SIGKILL ``pid`` only if it is still the process that started at ``start``."""
    ident = proc_identity(pid)
    if ident is not None and ident[1] == start:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kib = int(Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1])
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs have spent busy since boot (/proc/stat)."""
    with contextlib.suppress(OSError, ValueError):
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
        return (user + nice + system + irq + softirq + steal) / CLK_TCK
    return 0.0


def own_cpu_seconds() -> float:
    """CPU seconds of this process and its reaped descendants (servers, shells, fake API)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def loadavg() -> list[float]:
    with contextlib.suppress(OSError, ValueError):
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    return []


def git_state() -> dict[str, Any]:
    """The commit measured, and whether the package had uncommitted changes."""

    def git(*args: str) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            return subprocess.run(
                ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        return ""

    return {
        "commit": git("rev-parse", "HEAD"),
        "package_modified": bool(git("status", "--porcelain", "--", "jupyter_claude_pods")),
    }


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str] = {}
    for name in (
        "jupyter_server",
        "jupyter_server_terminals",
        "terminado",
        "tornado",
        "aiohttp",
        "kubernetes_asyncio",
        "jupyter-claude-pods",
    ):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "missing"
    return out


# --------------------------------------------------------------------------- child processes


class Child:
    """A child process in its own session (process group), stopped by PID."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str],
        cwd: Path,
        log_path: Path,
        stdout_pipe: bool = False,
    ) -> None:
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            list(argv),
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else self._log,
            stderr=self._log,
            start_new_session=True,
        )
        self.pid = self.proc.pid
        #: Descendants seen while running, killed at the end if they outlive the child.
        self.seen: dict[int, int] = {}

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    def remember_descendants(self) -> dict[int, int]:
        found = descendants(self.pid)
        self.seen.update(found)
        return found

    async def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the group, wait; SIGKILL after ``timeout``; then kill leftover descendants."""
        if self.alive:
            self.remember_descendants()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    await asyncio.to_thread(self.proc.wait, 5.0)
        for pid, start in self.seen.items():
            kill_if_same(pid, start)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def other_server_extensions() -> list[str]:
    """Server extensions enabled by installed packages (config.d), e.g. jupyterlab."""
    from jupyter_core.paths import jupyter_config_path

    names: set[str] = set()
    for directory in jupyter_config_path():
        for path in sorted(Path(directory, "jupyter_server_config.d").glob("*.json")):
            with contextlib.suppress(OSError, ValueError, AttributeError):
                data = json.loads(path.read_text())
                names.update(data.get("ServerApp", {}).get("jpserver_extensions", {}))
    return sorted(names - {"jupyter_claude_pods", "jupyter_server_terminals"})


def base_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "CLAUDE_PODS"))}
    env.pop("KUBECONFIG", None)
    env["PS1"] = PROMPT
    env["JUPYTER_DATA_DIR"] = str(home / "data")
    env["JUPYTER_RUNTIME_DIR"] = str(home / "runtime")
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def start_fake_kube(work: Path, validate: bool) -> tuple[Child, Path]:
    kubeconfig = work / "kubeconfig"
    argv = [sys.executable, str(REPO / "benchmarks" / "fake_kube_server.py"), str(kubeconfig)]
    if not validate:
        argv.append("--no-validate")
    child = Child(
        "fake-kube",
        argv,
        env=base_env(work),
        cwd=REPO,
        log_path=work / "fake-kube.log",
        stdout_pipe=True,
    )
    assert child.proc.stdout is not None
    try:
        line = await asyncio.wait_for(asyncio.to_thread(child.proc.stdout.readline), 60)
    except asyncio.TimeoutError:
        await child.stop()
        raise BenchError("the fake Kubernetes API did not start within 60 s") from None
    if not line.startswith(b"FAKE_KUBE_URL="):
        tail = child.log_tail()
        await child.stop()
        raise BenchError(f"the fake Kubernetes API failed to start:\n{tail}")
    return child, kubeconfig


@dataclass
class Server:
    """A running ``jupyter server`` of one arm."""

    arm: str
    child: Child
    url: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}


def start_jupyter(arm: str, work: Path, token: str, kubeconfig: Path | None) -> Server:
    """Start ``jupyter server`` for ``arm`` (config in a private JUPYTER_CONFIG_DIR)."""
    home = work / arm
    config_dir, root = home / "config", home / "root"
    for directory in (config_dir, root, home / "data", home / "runtime"):
        directory.mkdir(parents=True, exist_ok=True)
    extensions = dict.fromkeys(other_server_extensions(), False)
    extensions["jupyter_server_terminals"] = True
    extensions["jupyter_claude_pods"] = kubeconfig is not None
    config: dict[str, Any] = {
        "ServerApp": {
            "jpserver_extensions": extensions,
            "terminado_settings": {"shell_command": SHELL},
        }
    }
    if kubeconfig is not None:
        config["SandboxTerminalManager"] = {
            "backend": "kubernetes",
            "max_sandboxes": 500,
            "max_sandboxes_per_user": 500,
        }
        config["KubernetesBackend"] = {
            "kubeconfig": str(kubeconfig),
            "command": SHELL,
            "extra_env": {"PS1": PROMPT},
            "instance": f"bench-{arm}",
            "image": "registry.example/claude-pods-sandbox:bench",
        }
    else:
        config["ClaudePodsApp"] = {"replace_terminal_manager": False}
    (config_dir / "jupyter_server_config.json").write_text(json.dumps(config, indent=2))
    env = base_env(home)
    env["JUPYTER_CONFIG_DIR"] = str(config_dir)
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "jupyter_server",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        "--no-browser",
        "--allow-root",
        f"--ServerApp.root_dir={root}",
        f"--IdentityProvider.token={token}",
    ]
    child = Child(arm, argv, env=env, cwd=root, log_path=work / f"{arm}.log")
    return Server(arm, child, f"http://127.0.0.1:{port}", token)


async def wait_ready(session: aiohttp.ClientSession, server: Server, timeout: float = 90) -> None:
    """Poll ``/api/status`` until it answers 200 (or the process dies, or time runs out)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if not server.child.alive:
            raise BenchError(f"{server.arm} server exited:\n{server.child.log_tail()}")
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
            async with session.get(
                f"{server.url}/api/status",
                headers=server.headers,
                timeout=aiohttp.ClientTimeout(total=5),
            ) as resp:
                if resp.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise BenchError(f"{server.arm} server not ready after {timeout} s:\n{server.child.log_tail()}")


# --------------------------------------------------------------------------- terminal clients


class TerminalClosed(BenchError):
    """The terminal stream ended."""


class TerminalFailed(BenchError):
    """claude-pods wrote a failure (red ``[claude-pods] …`` line) instead of a prompt."""


class Stream(abc.ABC):
    """A terminal byte stream as text in/out, with wire accounting."""

    def __init__(self) -> None:
        self.buf = ""
        self.stdout_messages = 0
        self.wire_bytes = 0

    async def recv(self, timeout: float) -> str:
        """The next output text, "" for a message carrying none or after ``timeout``.

        Raises TerminalClosed at the end of the stream.
        """
        try:
            return await self._recv(timeout)
        except asyncio.TimeoutError:
            return ""

    @abc.abstractmethod
    async def _recv(self, timeout: float) -> str: ...

    @abc.abstractmethod
    async def send(self, text: str) -> None:
        """Keystrokes."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def expect(self, needle: str, timeout: float = 10.0) -> None:
        """Read until ``needle`` appears; consume the output up to and including it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (index := self.buf.find(needle)) < 0:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise BenchError(f"no {needle!r} within {timeout} s; got {self.buf[-300:]!r}")
            self.buf += await self.recv(remaining)
        self.buf = self.buf[index + len(needle) :]

    async def expect_prompt(self, timeout: float = 60.0) -> None:
        """Read until the output ends with the shell prompt; then forget the output."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not ANSI.sub("", self.buf).endswith(PROMPT):
            if FAILED_MARK in self.buf:
                raise TerminalFailed(ANSI.sub("", self.buf[self.buf.index(FAILED_MARK) :]).strip())
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise BenchError(f"no prompt within {timeout} s; got {self.buf[-300:]!r}")
            self.buf += await self.recv(remaining)
        self.buf = ""


class JupyterTerminal(Stream):
    """JupyterLab's terminal websocket protocol: JSON text frames."""

    def __init__(self, name: str, ws: aiohttp.ClientWebSocketResponse) -> None:
        super().__init__()
        self.name = name
        self.ws = ws

    async def _recv(self, timeout: float) -> str:
        msg = await self.ws.receive(timeout=timeout)
        if msg.type == aiohttp.WSMsgType.TEXT:
            self.wire_bytes += len(msg.data)
            data = json.loads(msg.data)
            if data[0] == "stdout":
                self.stdout_messages += 1
                return str(data[1])
            if data[0] == "disconnect":
                raise TerminalClosed(f"terminal {self.name} disconnected")
            return ""
        if msg.type == aiohttp.WSMsgType.PING:
            await self.ws.pong(msg.data)
            return ""
        if msg.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSING,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.ERROR,
        ):
            raise TerminalClosed(f"terminal {self.name} websocket closed ({msg.type.name})")
        return ""

    async def send(self, text: str) -> None:
        await self.ws.send_str(json.dumps(["stdin", text]))

    async def set_size(self, rows: int, cols: int) -> None:
        await self.ws.send_str(json.dumps(["set_size", rows, cols, rows * 16, cols * 8]))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 5)


class ExecStream(Stream):
    """A Kubernetes exec WebSocket (v5/v4 channel protocol): binary frames, channel byte first."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        super().__init__()
        self.ws = ws
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    async def _recv(self, timeout: float) -> str:
        msg = await self.ws.receive(timeout=timeout)
        if msg.type == aiohttp.WSMsgType.BINARY:
            self.wire_bytes += len(msg.data)
            if msg.data[:1] in (b"\x01", b"\x02"):
                self.stdout_messages += 1
                return str(self._decoder.decode(msg.data[1:]))
            if msg.data[:1] == b"\x03":
                raise TerminalClosed(f"exec ended: {msg.data[1:]!r}")
            return ""
        if msg.type == aiohttp.WSMsgType.PING:
            await self.ws.pong(msg.data)
            return ""
        if msg.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSING,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.ERROR,
        ):
            raise TerminalClosed(f"exec websocket closed ({msg.type.name})")
        return ""

    async def send(self, text: str) -> None:
        await self.ws.send_bytes(b"\x00" + text.encode())

    async def set_size(self, rows: int, cols: int) -> None:
        await self.ws.send_bytes(b"\x04" + json.dumps({"Width": cols, "Height": rows}).encode())

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 5)


async def open_terminal(
    session: aiohttp.ClientSession, server: Server, timeout: float = 60
) -> JupyterTerminal:
    """POST /api/terminals, connect its websocket, size it 24x80 (prompt not awaited)."""
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with session.post(
        f"{server.url}/api/terminals", headers=server.headers, json={}, timeout=client_timeout
    ) as resp:
        if resp.status != 200:
            raise BenchError(f"{server.arm}: POST /api/terminals {resp.status} {await resp.text()}")
        name = str((await resp.json())["name"])
    ws = await session.ws_connect(
        f"{server.url.replace('http', 'ws', 1)}/terminals/websocket/{name}",
        headers=server.headers,
        max_msg_size=0,
        autoping=False,  # pings are answered in recv(): aiohttp's receive(timeout) restarts on them
        timeout=aiohttp.ClientWSTimeout(ws_close=5),
    )
    term = JupyterTerminal(name, ws)
    await term.set_size(24, 80)
    return term


async def delete_terminal(
    session: aiohttp.ClientSession, server: Server, term: JupyterTerminal
) -> None:
    await term.close()
    async with session.delete(
        f"{server.url}/api/terminals/{term.name}",
        headers=server.headers,
        timeout=aiohttp.ClientTimeout(total=60),
    ) as resp:
        if resp.status not in (204, 404):
            raise BenchError(f"{server.arm}: DELETE terminal {term.name}: {resp.status}")


async def list_terminals(session: aiohttp.ClientSession, server: Server) -> list[Any]:
    async with session.get(
        f"{server.url}/api/terminals",
        headers=server.headers,
        timeout=aiohttp.ClientTimeout(total=30),
    ) as resp:
        result: list[Any] = await resp.json()
        return result


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 3),
        "p90_ms": round(percentile(ms, 90), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "max_ms": round(max(ms), 3) if ms else float("nan"),
        "mean_ms": round(statistics.fmean(ms), 3) if ms else float("nan"),
    }


# --------------------------------------------------------------------------- measurements


async def echo_once(term: Stream) -> tuple[float, float]:
    """Type "x", wait for its echo; type backspace, wait for its echo. Seconds each."""
    term.buf = ""
    start = time.perf_counter()
    await term.send("x")
    await term.expect("x", 10)
    x_latency = time.perf_counter() - start
    start = time.perf_counter()
    await term.send("\x7f")
    await term.expect("\x08", 10)
    return x_latency, time.perf_counter() - start


Samples = tuple[list[float], list[float]]


async def measure_echo(
    terms: Sequence[Stream], samples: int, warmup: int, gap: float
) -> list[Samples]:
    """Echo latency of "x" (and of the backspace erasing it), per terminal, in seconds.

    The terminals take turns sample by sample, so a disturbance (another process on the
    machine) hits every arm alike. ``gap`` is the quiet time after each sample; 0 means
    back-to-back typing. Warm-up samples are dropped.
    """
    results: list[Samples] = [([], []) for _ in terms]
    for i in range(warmup + samples):
        for term, (xs, backspaces) in zip(terms, results, strict=True):
            x_latency, bs_latency = await echo_once(term)
            if i >= warmup:
                xs.append(x_latency)
                backspaces.append(bs_latency)
            if gap > 0:
                await asyncio.sleep(gap)
    return results


@dataclass
class ThroughputRun:
    seconds: float
    chars: int
    stdout_messages: int
    wire_bytes: int
    cpu_server_s: float
    cpu_fake_s: float
    cpu_client_s: float

    @property
    def mb_per_s(self) -> float:
        return self.chars / self.seconds / MB


async def measure_throughput(
    term: Stream, path: Path, timeout: float, server_pid: int | None, fake_pid: int | None
) -> ThroughputRun:
    """``cat FILE; echo END``: time from sending the command until the end marker arrives."""
    term.buf = ""
    messages0, wire0 = term.stdout_messages, term.wire_bytes
    cpu0 = (
        cpu_seconds(server_pid) if server_pid else 0.0,
        cpu_seconds(fake_pid) if fake_pid else 0.0,
        time.process_time(),
    )
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    deadline = loop.time() + timeout
    await term.send(f"cat {path}; {END_COMMAND}\r")
    chars = 0
    tail = ""
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise BenchError(f"cat of {path} did not finish within {timeout} s")
        text = await term.recv(remaining)
        chars += len(text)
        window = tail + text
        if END_MARK in window:
            break
        tail = window[-len(END_MARK) :]
    seconds = time.perf_counter() - start
    cpu1 = (
        cpu_seconds(server_pid) if server_pid else 0.0,
        cpu_seconds(fake_pid) if fake_pid else 0.0,
        time.process_time(),
    )
    term.buf = window[window.index(END_MARK) + len(END_MARK) :]
    await term.expect_prompt(30)
    return ThroughputRun(
        seconds=seconds,
        chars=chars,
        stdout_messages=term.stdout_messages - messages0,
        wire_bytes=term.wire_bytes - wire0,
        cpu_server_s=round(cpu1[0] - cpu0[0], 3),
        cpu_fake_s=round(cpu1[1] - cpu0[1], 3),
        cpu_client_s=round(cpu1[2] - cpu0[2], 3),
    )


async def typist(
    term: Stream,
    begin: float,
    end: float,
    interval: float,
    out: list[float],
    errors: list[str],
) -> None:
    """Alternate "x" and backspace every ``interval`` s (random phase) until ``end``."""
    loop = asyncio.get_running_loop()
    due = begin + random.uniform(0, interval)
    i = 0
    while due < end:
        await asyncio.sleep(max(0.0, due - loop.time()))
        key, echo = ("x", "x") if i % 2 == 0 else ("\x7f", "\x08")
        term.buf = ""
        start = time.perf_counter()
        try:
            await term.send(key)
            await term.expect(echo, 10)
        except BenchError as e:
            errors.append(str(e)[:200])
            return
        out.append(time.perf_counter() - start)
        i += 1
        due += interval
        due = max(due, loop.time())  # behind schedule: do not burst to catch up
    if i % 2 == 1:  # leave an empty line
        with contextlib.suppress(BenchError):
            await term.send("\x7f")
            await term.expect("\x08", 10)


async def gather_bounded(
    factories: Sequence[Callable[[], Awaitable[Any]]], limit: int, return_exceptions: bool = False
) -> list[Any]:
    """Run the coroutine factories with at most ``limit`` at a time."""
    semaphore = asyncio.Semaphore(limit)

    async def run(factory: Callable[[], Awaitable[Any]]) -> Any:
        async with semaphore:
            return await factory()

    return await asyncio.gather(*(run(f) for f in factories), return_exceptions=return_exceptions)


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], timeout: float, what: str, poll: float = 0.1
) -> float:
    """Poll ``predicate`` until true; seconds it took. BenchError after ``timeout``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not await predicate():
        if loop.time() - start > timeout:
            raise BenchError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(poll)
    return loop.time() - start


# --------------------------------------------------------------------------- the arms


@dataclass
class ArmResult:
    name: str
    echo: dict[str, Any] = field(default_factory=dict)
    throughput: dict[str, Any] = field(default_factory=dict)
    concurrent: dict[str, Any] = field(default_factory=dict)


class Arm:
    """A Jupyter server under test, plus where its terminals' processes live."""

    def __init__(self, server: Server, session: aiohttp.ClientSession, fake: Child | None) -> None:
        self.server = server
        self.session = session
        self.fake = fake  # the fake API process (claude-pods) or None (baseline)
        self.result = ArmResult(server.arm)

    @property
    def name(self) -> str:
        return self.server.arm

    def processes_root(self) -> int:
        """The process whose descendants are this arm's shells (and, for the fake, pods)."""
        return self.fake.pid if self.fake is not None else self.server.child.pid

    def check_alive(self) -> None:
        for child in (self.server.child, self.fake):
            if child is not None and not child.alive:
                raise BenchError(f"{child.name} exited:\n{child.log_tail()}")

    async def open(self, timeout: float = 60) -> JupyterTerminal:
        self.check_alive()
        term = await open_terminal(self.session, self.server)
        await term.expect_prompt(timeout)
        return term

    async def delete(self, term: JupyterTerminal) -> None:
        await delete_terminal(self.session, self.server, term)

    async def quiesce(self, shells_before: int, timeout: float = 60) -> None:
        """Wait until no terminal is listed and the shell processes are back to before."""

        async def no_terminals() -> bool:
            return not await list_terminals(self.session, self.server)

        async def shells_gone() -> bool:
            return len(descendants(self.processes_root())) <= shells_before

        await wait_until(no_terminals, timeout, f"{self.name}: terminal list to empty")
        await wait_until(shells_gone, timeout, f"{self.name}: shell processes to exit")

    async def warm_up(self) -> None:
        """One terminal opened, typed into and deleted (imports, first pod, JIT-free paths)."""
        shells = len(descendants(self.processes_root()))
        term = await self.open()
        await measure_echo([term], 5, 0, 0.01)
        await self.delete(term)
        await self.quiesce(shells)

    async def concurrent(self, sizes: Sizes) -> None:
        """Open N terminals, have all of them type, measure echo and memory, delete them.

        Terminals that fail to start are recorded (and deleted); the typing phase then
        runs on those that did start, so a partial result is still measured.
        """
        n = sizes.terminals
        root = self.processes_root()
        shells0 = len(descendants(root))
        rss0 = rss_kib(self.server.child.pid)
        others0 = self._others_rss()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        startup: list[float] = []

        async def open_one() -> tuple[JupyterTerminal, float]:
            # The prompt is awaited outside the semaphore, so sandboxes start in parallel.
            begin = loop.time()
            return await open_terminal(self.session, self.server), begin

        outcomes = await gather_bounded([open_one] * n, 16, return_exceptions=True)
        opened = [o for o in outcomes if isinstance(o, tuple)]
        terms = [term for term, _ in opened]
        failures = [f"open: {o!r}"[:300] for o in outcomes if isinstance(o, BaseException)]

        async def prompt(term: JupyterTerminal, begin: float) -> JupyterTerminal | None:
            try:
                await term.expect_prompt(180)
            except BenchError as e:
                failures.append(f"terminal {term.name}: {e}"[:300])
                return None
            startup.append(loop.time() - begin)
            return term

        try:
            ready = [t for t in await asyncio.gather(*(prompt(t, b) for t, b in opened)) if t]
            open_all = loop.time() - t0
            self.check_alive()
            rss_open = rss_kib(self.server.child.pid)
            others_open = self._others_rss()
            latencies: list[float] = []
            errors: list[str] = []
            begin = loop.time() + 0.2
            end = begin + sizes.type_seconds
            fake_pid = self.fake.pid if self.fake is not None else 0
            cpu0 = cpu_seconds(self.server.child.pid), cpu_seconds(fake_pid) if fake_pid else 0.0
            await asyncio.gather(
                *(typist(t, begin, end, sizes.type_interval, latencies, errors) for t in ready)
            )
            cpu_typing = cpu_seconds(self.server.child.pid) - cpu0[0]
            fake_cpu_typing = (cpu_seconds(fake_pid) - cpu0[1]) if fake_pid else 0.0
            rss_typed = rss_kib(self.server.child.pid)
        finally:
            t_del = loop.time()
            await gather_bounded([functools.partial(self.delete, t) for t in terms], 16)
            delete_all = loop.time() - t_del
        await self.quiesce(shells0, timeout=120)
        quiet = loop.time() - t_del
        self.result.concurrent = {
            "terminals": n,
            "ready": len(ready),
            "failed": n - len(ready),
            "failures": failures[:5],
            "open_all_s": round(open_all, 2),
            "time_to_prompt": latency_summary(startup),
            "echo": latency_summary(latencies),
            "echo_errors": errors[:5],
            "echo_error_count": len(errors),
            "keystrokes_per_s": round(len(latencies) / sizes.type_seconds, 1),
            "server_cpu_while_typing_s": round(cpu_typing, 2),
            "fake_api_cpu_while_typing_s": round(fake_cpu_typing, 2),
            "server_rss_kib": {"zero": rss0, "open": rss_open, "after_typing": rss_typed},
            # per terminal created (failed ones included: they stay listed, with their buffer)
            "server_kib_per_terminal": round((rss_open - rss0) / n, 1),
            "server_kib_per_terminal_after_typing": round((rss_typed - rss0) / n, 1),
            "other_processes_rss_kib": {"zero": others0, "open": others_open},
            "other_processes_kib_per_terminal": round((others_open - others0) / n, 1),
            "delete_all_s": round(delete_all, 2),
            "delete_until_processes_gone_s": round(quiet, 2),
        }

    def _others_rss(self) -> int:
        """RSS of this arm's other processes: the shells (and the fake API and its pods)."""
        root = self.processes_root()
        total = sum(rss_kib(pid) for pid in descendants(root))
        if self.fake is not None:
            total += rss_kib(self.fake.pid)
        return total


# --------------------------------------------------------------------------- direct exec arm


@dataclass
class DirectExec:
    """A pod on the fake API and an exec stream to it, without Jupyter in between."""

    session: aiohttp.ClientSession
    server: str
    token: str
    namespace: str = "sandboxes"
    pod: str = f"bench-direct-{secrets.token_hex(3)}"

    @classmethod
    def from_kubeconfig(cls, session: aiohttp.ClientSession, path: Path) -> DirectExec:
        import yaml

        config = yaml.safe_load(path.read_text())
        return cls(
            session,
            config["clusters"][0]["cluster"]["server"],
            config["users"][0]["user"]["token"],
        )

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def pod_url(self) -> str:
        return f"{self.server}/api/v1/namespaces/{self.namespace}/pods/{self.pod}"

    async def create_pod(self) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": self.pod, "labels": {"app": "bench-direct"}},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "sandbox",
                        "image": "registry.example/claude-pods-sandbox:bench",
                        "command": ["sleep", "infinity"],
                        "env": [{"name": "PS1", "value": PROMPT}],
                    }
                ],
            },
        }
        async with self.session.post(
            f"{self.server}/api/v1/namespaces/{self.namespace}/pods",
            headers=self.headers,
            json=body,
            timeout=aiohttp.ClientTimeout(total=30),
        ) as resp:
            if resp.status not in (200, 201):
                raise BenchError(f"direct: create pod: {resp.status} {await resp.text()}")

        async def running() -> bool:
            async with self.session.get(
                self.pod_url, headers=self.headers, timeout=aiohttp.ClientTimeout(total=10)
            ) as resp:
                pod = await resp.json()
            statuses = pod.get("status", {}).get("containerStatuses") or []
            return pod.get("status", {}).get("phase") == "Running" and all(
                s.get("ready") for s in statuses
            )

        await wait_until(running, 60, "the direct pod to run", poll=0.05)

    async def connect(self) -> ExecStream:
        params = [("command", part) for part in SHELL]
        params += [("container", "sandbox"), ("stdin", "true"), ("stdout", "true")]
        params += [("tty", "true")]
        ws = await self.session.ws_connect(
            f"{self.server.replace('http', 'ws', 1)}/api/v1/namespaces/{self.namespace}"
            f"/pods/{self.pod}/exec",
            params=params,
            headers=self.headers,
            protocols=("v5.channel.k8s.io", "v4.channel.k8s.io"),
            max_msg_size=0,
            autoping=False,
            timeout=aiohttp.ClientWSTimeout(ws_close=5),
        )
        stream = ExecStream(ws)
        await stream.set_size(24, 80)
        await stream.expect_prompt(30)
        return stream

    async def delete_pod(self) -> None:
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
            async with self.session.delete(
                self.pod_url,
                headers=self.headers,
                params={"gracePeriodSeconds": "0"},
                timeout=aiohttp.ClientTimeout(total=30),
            ):
                pass


# --------------------------------------------------------------------------- the run


def make_data_file(path: Path, megabytes: int) -> int:
    """Random printable ASCII with newlines (lines of ~85 characters on average)."""
    alphabet = bytes(range(0x20, 0x7F))
    table = bytes(
        0x0A if i < 3 else alphabet[i % len(alphabet)] for i in range(256)
    )  # 3/256 newlines
    size = megabytes * MB
    with path.open("wb") as f:
        left = size
        while left > 0:
            chunk = os.urandom(min(left, 4 * MB)).translate(table)
            f.write(chunk)
            left -= len(chunk)
        f.write(b"\n")
    return size + 1


def median_run(runs: Sequence[ThroughputRun]) -> ThroughputRun:
    return sorted(runs, key=lambda r: r.mb_per_s)[len(runs) // 2]


def throughput_summary(runs: Sequence[ThroughputRun], file_bytes: int) -> dict[str, Any]:
    median = median_run(runs)
    return {
        "file_bytes": file_bytes,
        "runs": [
            {**asdict(r), "seconds": round(r.seconds, 4), "mb_per_s": round(r.mb_per_s, 2)}
            for r in runs
        ],
        "median_mb_per_s": round(median.mb_per_s, 2),
        "median_file_mb_per_s": round(file_bytes / median.seconds / MB, 2),
        "median_seconds": round(median.seconds, 3),
        "median_stdout_messages": median.stdout_messages,
        "median_chars_per_message": round(median.chars / max(1, median.stdout_messages)),
        "median_wire_bytes": median.wire_bytes,
        "median_cpu_s": {
            "server": median.cpu_server_s,
            "fake_api": median.cpu_fake_s,
            "client": median.cpu_client_s,
        },
    }


@contextlib.contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bench-terminals-"))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def run(sizes: Sizes, mode: str, direct: bool, validate: bool, keep: bool) -> dict[str, Any]:
    """Start the processes, measure every arm, stop everything; the results as JSON data."""
    started = time.perf_counter()
    load_before = loadavg()
    busy0, own0 = machine_busy_seconds(), own_cpu_seconds()
    children: list[Child] = []
    servers: list[Server] = []
    with workdir(keep) as work:
        try:
            data = work / "data.txt"
            file_bytes = make_data_file(data, sizes.file_mb)
            log(f"data file: {file_bytes / MB:.1f} MB")
            fake, kubeconfig = await start_fake_kube(work, validate)
            children.append(fake)
            token = secrets.token_hex(24)
            baseline = start_jupyter("baseline", work, token, None)
            servers.append(baseline)
            pods = start_jupyter("claude-pods", work, token, kubeconfig)
            servers.append(pods)
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as session:
                await asyncio.gather(wait_ready(session, baseline), wait_ready(session, pods))
                log(f"servers ready after {time.perf_counter() - started:.1f} s")
                arms = [Arm(baseline, session, None), Arm(pods, session, fake)]
                for arm in arms:
                    await arm.warm_up()
                log("warm-up done")

                terms = [await arm.open() for arm in arms]
                quiet = await measure_echo(
                    terms, sizes.echo_samples, sizes.echo_warmup, sizes.echo_gap
                )
                for arm, term, (xs, bss) in zip(arms, terms, quiet, strict=True):
                    ((fast, _),) = await measure_echo([term], sizes.fast_samples, 5, 0.0)
                    await arm.delete(term)
                    arm.result.echo = {
                        "x": latency_summary(xs),
                        "backspace": latency_summary(bss),
                        "back_to_back_x": latency_summary(fast),
                    }
                    log(f"{arm.name}: echo {arm.result.echo['x']}")

                for arm in arms:
                    await arm.concurrent(sizes)
                    c = arm.result.concurrent
                    log(
                        f"{arm.name}: {c['terminals']} terminals open in {c['open_all_s']} s, "
                        f"echo {c['echo']}, {c['server_kib_per_terminal']} KiB/terminal"
                    )

                terms = [await arm.open() for arm in arms]
                runs: dict[str, list[ThroughputRun]] = {arm.name: [] for arm in arms}
                timeout = 30 + sizes.file_mb * 2.0
                for rep in range(sizes.throughput_repeats):
                    for arm, term in zip(arms, terms, strict=True):
                        arm.check_alive()
                        fake_pid = arm.fake.pid if arm.fake else None
                        result = await measure_throughput(
                            term, data, timeout, arm.server.child.pid, fake_pid
                        )
                        runs[arm.name].append(result)
                        log(
                            f"{arm.name}: throughput #{rep + 1} {result.mb_per_s:.1f} MB/s "
                            f"in {result.stdout_messages} messages"
                        )
                for arm, term in zip(arms, terms, strict=True):
                    await arm.delete(term)
                    arm.result.throughput = throughput_summary(runs[arm.name], file_bytes)

                results = {arm.name: asdict(arm.result) for arm in arms}
                if direct:
                    results["direct"] = await run_direct(session, kubeconfig, sizes, data, fake)
        finally:
            # Jupyter servers first: claude-pods deletes its pods through the fake API.
            await asyncio.gather(*(s.child.stop() for s in servers))
            await asyncio.gather(*(c.stop() for c in children))
            for child in [s.child for s in servers] + children:
                if child.proc.returncode not in (0, -signal.SIGTERM):
                    log(f"note: {child.name} exited with status {child.proc.returncode}")
            if keep:
                log(f"logs and configuration kept in {work}")
    elapsed = time.perf_counter() - started
    foreign = (machine_busy_seconds() - busy0) - (own_cpu_seconds() - own0)
    if foreign > 0.1 * elapsed:
        log(
            f"warning: other processes used {foreign:.1f} CPU-s during this {elapsed:.0f} s run; "
            "the numbers are disturbed"
        )
    return {
        "mode": mode,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "duration_s": round(elapsed, 1),
        "machine": machine_info(),
        "loadavg": {"before": load_before, "after": loadavg()},
        # CPU time used by processes that are not part of this benchmark while it ran
        "other_cpu_seconds": round(max(0.0, foreign), 1),
        "git": git_state(),
        "versions": package_versions(),
        "sizes": asdict(sizes),
        "fake_api_validates_pods": validate,
        "arms": results,
    }


async def run_direct(
    session: aiohttp.ClientSession, kubeconfig: Path, sizes: Sizes, data: Path, fake: Child
) -> dict[str, Any]:
    """The exec stream of the fake API read directly: what the Jupyter layer adds on top."""
    direct = DirectExec.from_kubeconfig(session, kubeconfig)
    await direct.create_pod()
    try:
        stream = await direct.connect()
        try:
            ((xs, bss),) = await measure_echo(
                [stream], sizes.echo_samples, sizes.echo_warmup, sizes.echo_gap
            )
            echo = {"x": latency_summary(xs), "backspace": latency_summary(bss)}
            log(f"direct: echo {echo['x']}")
            runs = []
            for _ in range(sizes.throughput_repeats):
                run_ = await measure_throughput(
                    stream, data, 30 + sizes.file_mb * 2.0, None, fake.pid
                )
                runs.append(run_)
                log(f"direct: throughput {run_.mb_per_s:.1f} MB/s")
        finally:
            await stream.close()
    finally:
        await direct.delete_pod()
    return {
        "name": "direct",
        "echo": echo,
        "throughput": throughput_summary(runs, data.stat().st_size),
    }


# --------------------------------------------------------------------------- report


def _fmt(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}"


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    base, pods = results["arms"]["baseline"], results["arms"]["claude-pods"]
    ratio = pods["throughput"]["median_mb_per_s"] / base["throughput"]["median_mb_per_s"]
    d50 = pods["echo"]["x"]["p50_ms"] - base["echo"]["x"]["p50_ms"]
    d99 = pods["echo"]["x"]["p99_ms"] - base["echo"]["x"]["p99_ms"]
    con = pods["concurrent"]
    c99 = con["echo"]["p99_ms"]
    return [
        {
            "target": "throughput ≥ 1.0x baseline",
            "value": round(ratio, 2),
            "pass": ratio >= 1.0,
        },
        {"target": "echo p50 ≤ baseline + 1 ms", "value": round(d50, 3), "pass": d50 <= 1.0},
        {"target": "echo p99 ≤ baseline + 5 ms", "value": round(d99, 3), "pass": d99 <= 5.0},
        {
            "target": f"{con['terminals']} typing terminals: all start, echo p99 ≤ 50 ms",
            "value": f"{con['ready']}/{con['terminals']} started, p99 {c99} ms",
            "pass": c99 <= 50.0 and not con["echo_error_count"] and not con["failed"],
        },
    ]


def _get(data: dict[str, Any], dotted: str) -> float:
    value: Any = data
    for part in dotted.split("."):
        value = value[part]
    return float(value)


def markdown(results: dict[str, Any]) -> str:
    """The results as a markdown table (numbers, comparison, targets)."""
    arms = results["arms"]
    base, pods = arms["baseline"], arms["claude-pods"]
    direct = arms.get("direct")
    n = pods["concurrent"]["terminals"]
    mb = base["throughput"]["file_bytes"] / MB
    tp, con = "throughput", "concurrent"
    # label, dotted key, digits, "ratio" or "diff"; the direct arm has only some keys
    specs: list[tuple[str, str, int, str]] = [
        (f"`cat` {mb:.0f} MB: MB/s (median)", f"{tp}.median_mb_per_s", 1, "ratio"),
        ("`cat`: stdout messages", f"{tp}.median_stdout_messages", 0, "ratio"),
        ("`cat`: characters per message", f"{tp}.median_chars_per_message", 0, "ratio"),
        ("`cat`: Jupyter server CPU, s", f"{tp}.median_cpu_s.server", 2, "ratio"),
        ("`cat`: fake API CPU, s", f"{tp}.median_cpu_s.fake_api", 2, "diff"),
        ("`cat`: client CPU, s", f"{tp}.median_cpu_s.client", 2, "ratio"),
        ("echo at a quiet prompt: p50, ms", "echo.x.p50_ms", 2, "diff"),
        ("echo at a quiet prompt: p99, ms", "echo.x.p99_ms", 2, "diff"),
        ("echo back-to-back: p50, ms", "echo.back_to_back_x.p50_ms", 2, "diff"),
        ("echo back-to-back: p99, ms", "echo.back_to_back_x.p99_ms", 2, "diff"),
        (f"{n} terminals: started (prompt seen)", f"{con}.ready", 0, "diff"),
        (f"{n} terminals: open all until prompts, s", f"{con}.open_all_s", 1, "ratio"),
        (f"{n} terminals: time to prompt p50, ms", f"{con}.time_to_prompt.p50_ms", 0, "ratio"),
        ("all started terminals typing: echo p50, ms", f"{con}.echo.p50_ms", 2, "diff"),
        ("all started terminals typing: echo p99, ms", f"{con}.echo.p99_ms", 2, "diff"),
        ("typing: keystrokes echoed", f"{con}.echo.n", 0, "diff"),
        ("typing: Jupyter server CPU, s", f"{con}.server_cpu_while_typing_s", 2, "ratio"),
        ("typing: fake API CPU, s", f"{con}.fake_api_cpu_while_typing_s", 2, "diff"),
        (
            f"{n} terminals: server RSS per terminal, KiB",
            f"{con}.server_kib_per_terminal",
            0,
            "ratio",
        ),
        (
            f"{n} terminals: other processes' RSS per terminal, KiB",
            f"{con}.other_processes_kib_per_terminal",
            0,
            "ratio",
        ),
        (f"{n} terminals: DELETE all, s", f"{con}.delete_all_s", 2, "ratio"),
    ]
    lines = [
        "| measurement | baseline (terminado) | claude-pods | claude-pods vs baseline | direct "
        + "exec (no Jupyter) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, key, digits, how in specs:
        b, p = _get(base, key), _get(pods, key)
        ratio = f"{p / b:.2f}x" if b else "-"
        compare = ratio if how == "ratio" else f"{p - b:+.{digits}f}"
        d = "-"
        with contextlib.suppress(KeyError, TypeError):
            d = _fmt(_get(direct or {}, key), digits)
        lines.append(f"| {label} | {_fmt(b, digits)} | {_fmt(p, digits)} | {compare} | {d} |")
    checks = [
        f"- {t['target']}: {t['value']} -> **{'pass' if t['pass'] else 'MISS'}**"
        for t in results["targets"]
    ]
    return "\n".join([*lines, "", *checks]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for a CI smoke run")
    parser.add_argument("--no-direct", action="store_true", help="skip the direct exec arm")
    parser.add_argument(
        "--no-validate",
        action="store_true",
        help="the fake API skips OpenAPI validation of pods (faster start of many terminals)",
    )
    parser.add_argument("--terminals", type=int, default=0, help="override the terminal count")
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory (server and fake API logs)"
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit with status 2 when a target is missed"
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write JSON")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.terminals > 0:
        sizes = dataclasses.replace(sizes, terminals=args.terminals)
    mode = "quick" if args.quick else "full"

    async def guarded() -> dict[str, Any]:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        assert task is not None
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        coro = run(sizes, mode, not args.no_direct, not args.no_validate, args.keep)
        return await asyncio.wait_for(coro, sizes.deadline)

    try:
        results = asyncio.run(guarded())
    except asyncio.TimeoutError:
        print(f"benchmark failed: not done after {sizes.deadline} s", file=sys.stderr)
        return 1
    except (asyncio.CancelledError, KeyboardInterrupt):
        print("benchmark interrupted (child processes stopped)", file=sys.stderr)
        return 130
    except BenchError as e:
        print(f"benchmark failed: {e}", file=sys.stderr)
        return 1
    results["targets"] = targets(results)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    print(
        f"({mode} run, {results['duration_s']} s; other processes used "
        f"{results['other_cpu_seconds']} CPU-s meanwhile; JSON in {args.output})"
    )
    if args.strict and not all(t["pass"] for t in results["targets"]):
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
