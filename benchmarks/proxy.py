"""Proxy benchmark: latency claude-pods-proxy adds to Messages API calls, against direct calls
to the same upstream and against nginx doing the same header swap, measured in one run.

Usage::

    .venv/bin/python benchmarks/proxy.py [--quick] [--no-nginx] [--output PATH]

Arms (every server is an OS process of its own, listening on 127.0.0.1 only):

* ``direct``: the benchmark client talks to the fake Messages API
  (``tests/fakes/anthropic_api.py``, Tornado) with the real key;
* ``proxy``: client → ``claude-pods-proxy serve`` (session token checked, budgets, rate
  limit, usage accounting, SQLite write-behind, JSON access log to a file, metrics: the
  production code path with generous limits) → the same fake;
* ``nginx``: client → nginx (``proxy_set_header x-api-key``, ``Authorization`` cleared,
  ``proxy_buffering off``, HTTP/1.1 keep-alive upstream pool, access log to a file) → the
  same fake. If nginx is missing the script tries ``apt-get install nginx-light`` (as
  root) and otherwise reports "nginx: not installed".

The client lives in this process: raw asyncio streams, one keep-alive HTTP/1.1
connection per sequence, a few lines of response framing (no HTTP library, so client
overhead is small and identical for every arm). Arms are interleaved in rounds so that
drift in machine load hits all of them alike.

Measurements: non-streaming latency (p50/p99, small body and a 76 KB body the size of a
Claude Code request), time to first byte of a streamed reply (the ``message_start``
event), and N concurrent streams (errors, TTFB under load, wall time). Results go to
``benchmarks/results/proxy.json`` and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results" / "proxy.json"
PROXY_BIN = Path(sys.executable).parent / "claude-pods-proxy"
REAL_KEY = "benchmark-upstream-key-not-a-secret-0123456789"
SECRET = secrets.token_urlsafe(48)
CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGET_ADDED_P50_MS = 0.5
TARGET_ADDED_TTFB_MS = 0.5
STREAM_EVENT_GAP = 0.002  # seconds between SSE events in the TTFB measurement

sys.path.insert(0, str(REPO / "proxy"))
from claude_pods_proxy.tokens import mint_token


class BenchError(RuntimeError):
    """Something could not be measured (a server died, a reply was wrong)."""


@dataclass(frozen=True)
class Sizes:
    rounds: int
    samples: int  # per arm and measurement, over all rounds
    warmup: int  # per arm, per round
    big_samples: int
    stream_samples: int  # spaced-event streams (each lasts ~8 events x 2 ms)
    concurrent: int
    concurrent_chunks: int
    concurrent_delay: float


FULL = Sizes(
    rounds=4,
    samples=4000,
    warmup=200,
    big_samples=1000,
    stream_samples=1000,
    concurrent=500,
    concurrent_chunks=20,
    concurrent_delay=0.025,
)
QUICK = Sizes(
    rounds=2,
    samples=600,
    warmup=100,
    big_samples=200,
    stream_samples=200,
    concurrent=100,
    concurrent_chunks=10,
    concurrent_delay=0.02,
)


# ----------------------------------------------------------------------------- processes


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return round(total / 1024, 1)


def children_of(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return [int(p) for p in text.split()]
    return []


@dataclass
class Server:
    """A server process this benchmark started (stopped by its PID only)."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int = 0
    logs: list[Path] = field(default_factory=list)

    def pids(self) -> list[int]:
        return [self.proc.pid, *children_of(self.proc.pid)]

    def check(self) -> None:
        if self.proc.poll() is not None:
            tail = ""
            for log in self.logs:
                with contextlib.suppress(OSError):
                    tail += log.read_text()[-2000:]
            raise BenchError(f"{self.name} exited with {self.proc.returncode}: {tail}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def spawn(name: str, cmd: list[str], tmp: Path, env: dict[str, str] | None = None) -> Server:
    out, err = tmp / f"{name}.out", tmp / f"{name}.err"
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=out.open("wb"),
        stderr=err.open("wb"),
    )
    return Server(name, proc, logs=[err, out])


async def wait_until(predicate: Any, server: Server, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        server.check()
        result = predicate()
        if result:
            return result
        await asyncio.sleep(0.05)
    raise BenchError(f"{server.name}: timed out waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def start_fake(tmp: Path) -> Server:
    port_file = tmp / "fake.port"
    server = spawn(
        "fake",
        [
            sys.executable,
            "-m",
            "tests.fakes.anthropic_api",
            "--port-file",
            str(port_file),
            "--api-key",
            REAL_KEY,
        ],
        tmp,
    )

    def port() -> int:
        with contextlib.suppress(OSError, ValueError):
            return int(port_file.read_text())
        return 0

    server.port = await wait_until(port, server, "its port file")
    return server


async def start_proxy(tmp: Path, upstream: int) -> Server:
    server = spawn(
        "proxy",
        [
            str(PROXY_BIN),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--db",
            str(tmp / "proxy.sqlite3"),
            # generous limits: every check runs, none refuses the benchmark's traffic
            "--rate-limit-rpm",
            "100000000",
            "--max-concurrent",
            "8",
            "--session-budget-usd",
            "100",
            "--user-daily-budget-usd",
            "100000",
        ],
        tmp,
        env={
            "ANTHROPIC_API_KEY": REAL_KEY,
            "CLAUDE_PODS_TOKEN_SECRET": SECRET,
            "CLAUDE_PODS_UPSTREAM_URL": f"http://127.0.0.1:{upstream}",
        },
    )
    pattern = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")

    def port() -> int:
        m = pattern.search(server.logs[0].read_text())
        return int(m.group(1)) if m else 0

    server.port = await wait_until(port, server, "its listening line")
    return server


NGINX_CONF = """
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 10000000;  # nginx closes client connections after 1000 by default
    upstream fake {{ server 127.0.0.1:{upstream}; keepalive 256; keepalive_requests 10000000; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        client_max_body_size 32m;
        client_body_buffer_size 32m;  # bodies stay in memory, as in the proxy
        proxy_http_version 1.1;
        proxy_buffering off;
        proxy_read_timeout 600s;
        proxy_set_header Connection "";
        proxy_set_header Authorization "";
        proxy_set_header x-api-key "{key}";
        location = /v1/messages {{ proxy_pass http://fake; }}
        location = /v1/messages/count_tokens {{ proxy_pass http://fake; }}
        location / {{ return 404; }}
    }}
}}
"""


def find_nginx(install: bool) -> tuple[str | None, str]:
    """The nginx binary (installing the Debian package if allowed) and a status note."""
    path = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if path or not install:
        return path, "" if path else "not installed"
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None, "not installed (apt-get not usable)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "install", "-y", "-qq", "nginx-light"],
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "nginx-light"],
        ["apt-get", "install", "-y", "-qq", "nginx"],
    ):
        subprocess.run(cmd, env=env, capture_output=True, timeout=600, check=False)
        path = shutil.which("nginx") or (
            "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
        )
        if path:
            return path, "installed by this run"
    return None, "not installed (apt-get failed)"


async def start_nginx(binary: str, tmp: Path, upstream: int) -> Server:
    home = tmp / "nginx"
    home.mkdir()
    # nginx workers run as an unprivileged user: let them reach their temp directories.
    tmp.chmod(0o711)
    home.chmod(0o755)
    port = free_port()
    conf = home / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=home, upstream=upstream, port=port, key=REAL_KEY))
    server = spawn("nginx", [binary, "-p", str(home), "-c", str(conf)], tmp)
    server.logs.append(home / "error.log")
    server.port = port

    def accepting() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    await wait_until(accepting, server, "its port")
    return server


def nginx_version(binary: str) -> str:
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
    return (out.stderr or out.stdout).strip().removeprefix("nginx version: ")


# ----------------------------------------------------------------------------- client


def request_bytes(port: int, body: bytes, auth: tuple[str, str], path: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth[0]}: {auth[1]}\r\n"
        "anthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Client:
    """One keep-alive HTTP/1.1 connection and just enough framing to read replies."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        return cls(reader, writer)

    def close(self) -> None:
        self.writer.close()

    async def exchange(self, request: bytes) -> tuple[int, float, float, bytes]:
        """(status, seconds to the first body byte, seconds to the end, body)."""
        read = self.reader
        started = time.perf_counter()
        self.writer.write(request)
        head = await read.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        if b"transfer-encoding: chunked" in lower:
            parts = []
            first = 0.0
            while True:
                size = int((await read.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await read.readexactly(2)
                    break
                parts.append(await read.readexactly(size + 2))
                if not first:
                    first = time.perf_counter()
            body = b"".join(p[:-2] for p in parts)
        else:
            at = lower.find(b"\r\ncontent-length:")
            if at < 0:
                raise BenchError(f"reply without length: {head!r}")
            length = int(lower[at + 17 : lower.index(b"\r\n", at + 2)])
            body = await read.readexactly(length)
            first = time.perf_counter()
        return status, first - started, time.perf_counter() - started, body


@dataclass
class Arm:
    name: str
    port: int
    auth: Any  # callable(session) -> header pair
    servers: list[Server]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 4),
        "p90_ms": round(pct(ms, 0.90), 4),
        "p99_ms": round(pct(ms, 0.99), 4),
        "mean_ms": round(statistics.fmean(ms), 4),
    }


async def sequence(
    arm: Arm, body: bytes, n: int, warmup: int, session: str, stream: bool
) -> tuple[list[float], list[float], float]:
    """n timed requests on one connection: (latencies, TTFBs, server CPU seconds used)."""
    client = await Client.open(arm.port)
    request = request_bytes(arm.port, body, arm.auth(session), "/v1/messages?beta=true")
    totals, firsts = [], []
    pids = [p for s in arm.servers for p in s.pids()]
    try:
        for i in range(warmup + n):
            if i == warmup:
                cpu_before = cpu_seconds(pids)
            status, first, total, reply = await client.exchange(request)
            if status != 200:
                raise BenchError(f"{arm.name}: HTTP {status}: {reply[:300]!r}")
            if stream and not reply.endswith(b'data: {"type":"message_stop"}\n\n'):
                raise BenchError(f"{arm.name}: incomplete stream {reply[-200:]!r}")
            if i >= warmup:
                totals.append(total)
                firsts.append(first)
        return totals, firsts, cpu_seconds(pids) - cpu_before
    finally:
        client.close()


async def concurrent_streams(arm: Arm, sizes: Sizes) -> dict[str, Any]:
    body = json.dumps(
        {
            "model": "claude-sonnet-4-5",
            "max_tokens": 1024,
            "stream": True,
            "messages": [{"role": "user", "content": "say hi"}],
            "fake_chunks": sizes.concurrent_chunks,
            "fake_delay": sizes.concurrent_delay,
        }
    ).encode()
    clients = await asyncio.gather(*(Client.open(arm.port) for _ in range(sizes.concurrent)))
    errors: list[str] = []
    firsts: list[float] = []
    pids = [p for s in arm.servers for p in s.pids()]
    cpu_before = cpu_seconds(pids)

    async def one(i: int, client: Client) -> None:
        request = request_bytes(arm.port, body, arm.auth(f"conc-{i}"), "/v1/messages?beta=true")
        try:
            status, first, _total, reply = await asyncio.wait_for(client.exchange(request), 120)
        except Exception as e:  # noqa: BLE001 - every failure is counted, none stops the run
            errors.append(f"{type(e).__name__}: {e}")
            return
        if status != 200 or not reply.endswith(b'data: {"type":"message_stop"}\n\n'):
            errors.append(f"HTTP {status}: {reply[-120:]!r}")
            return
        if reply.count(b"event: content_block_delta") != sizes.concurrent_chunks:
            errors.append("wrong number of deltas")
        firsts.append(first)

    started = time.perf_counter()
    await asyncio.gather(*(one(i, c) for i, c in enumerate(clients)))
    wall = time.perf_counter() - started
    peak_rss = rss_mib(pids)
    for c in clients:
        c.close()
    stream_seconds = sizes.concurrent_chunks * sizes.concurrent_delay
    return {
        "streams": sizes.concurrent,
        "errors": len(errors),
        "error_examples": sorted(set(errors))[:5],
        "wall_s": round(wall, 3),
        "ideal_s": round(stream_seconds, 3),
        "ttfb": summary(firsts) if firsts else None,
        "server_cpu_s": round(cpu_seconds(pids) - cpu_before, 2),
        "server_rss_mib": peak_rss,
    }


# ----------------------------------------------------------------------------- the run


def message_body(size: int) -> bytes:
    base = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "say hi"}],
    }
    raw = json.dumps(base).encode()
    if size > len(raw):
        base["system"] = "x" * (size - len(raw) - 14)
        raw = json.dumps(base).encode()
    return raw


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import tornado

    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "tornado": tornado.version,
    }


@contextlib.contextmanager
def servers_stopped(servers: list[Server]) -> Iterator[None]:
    try:
        yield
    finally:
        for server in reversed(servers):
            server.stop(signal.SIGQUIT if server.name == "nginx" else signal.SIGTERM)


async def run(sizes: Sizes, want_nginx: bool) -> dict[str, Any]:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    nginx_bin, nginx_note = find_nginx(install=want_nginx) if want_nginx else (None, "skipped")
    load_start = os.getloadavg()  # other work on the machine shows up in the tails
    servers: list[Server] = []
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp_name, servers_stopped(servers):
        tmp = Path(tmp_name)
        fake = await start_fake(tmp)
        servers.append(fake)
        proxy = await start_proxy(tmp, fake.port)
        servers.append(proxy)
        arms = [
            Arm("direct", fake.port, lambda s: ("x-api-key", REAL_KEY), [fake]),
            Arm(
                "proxy",
                proxy.port,
                lambda s: (
                    "Authorization",
                    f"Bearer {mint_token(SECRET.encode(), 'bench', s, 86400)}",
                ),
                [proxy],
            ),
        ]
        if nginx_bin:
            nginx = await start_nginx(nginx_bin, tmp, fake.port)
            servers.append(nginx)
            nginx_note = f"{nginx_version(nginx_bin)} {nginx_note}".strip()
            arms.append(
                Arm("nginx", nginx.port, lambda s: ("Authorization", "Bearer dummy"), [nginx])
            )
        small, big = message_body(300), message_body(76_000)
        # Two stream shapes. "ttfb": events 2 ms apart, as a model produces them. "burst":
        # all events back to back; Tornado then forwards the already-arrived events in
        # one write (it merges chunks that are in its buffer, never waits for more), so
        # the first byte leaves after the burst has been read.
        stream_body = json.dumps(
            {**json.loads(small), "stream": True, "fake_delay": STREAM_EVENT_GAP}
        ).encode()
        burst_body = json.dumps({**json.loads(small), "stream": True}).encode()
        samples: dict[str, dict[str, list[float]]] = {a.name: {} for a in arms}
        cpu: dict[str, float] = {a.name: 0.0 for a in arms}
        per_round = max(1, sizes.samples // sizes.rounds)
        big_round = max(1, sizes.big_samples // sizes.rounds)
        stream_round = max(1, sizes.stream_samples // sizes.rounds)
        for r in range(sizes.rounds):
            order = arms[r % len(arms) :] + arms[: r % len(arms)]
            for arm in order:
                got = samples[arm.name]
                totals, _, used = await sequence(
                    arm, small, per_round, sizes.warmup, f"ns-{r}", False
                )
                got.setdefault("nonstream", []).extend(totals)
                cpu[arm.name] += used
                _, firsts, _ = await sequence(
                    arm, stream_body, stream_round, sizes.warmup // 4, f"st-{r}", True
                )
                got.setdefault("ttfb", []).extend(firsts)
                _, firsts, _ = await sequence(
                    arm, burst_body, per_round, sizes.warmup, f"sb-{r}", True
                )
                got.setdefault("ttfb_burst", []).extend(firsts)
                totals, _, _ = await sequence(
                    arm, big, big_round, sizes.warmup // 4, f"big-{r}", False
                )
                got.setdefault("nonstream_76k", []).extend(totals)
            print(f"round {r + 1}/{sizes.rounds} done", file=sys.stderr)
        concurrent = {}
        for arm in arms:
            concurrent[arm.name] = await concurrent_streams(arm, sizes)
            print(f"{sizes.concurrent} concurrent streams via {arm.name}: done", file=sys.stderr)
        for server in servers:
            server.check()
        result: dict[str, Any] = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "sizes": asdict(sizes),
            "machine": {
                **machine_info(),
                "loadavg_start": load_start,
                "loadavg_end": os.getloadavg(),
            },
            "nginx": nginx_note,
            "arms": {},
        }
        for arm in arms:
            got = samples[arm.name]
            result["arms"][arm.name] = {
                "nonstream": summary(got["nonstream"]),
                "nonstream_76k": summary(got["nonstream_76k"]),
                "ttfb": summary(got["ttfb"]),
                "ttfb_burst": summary(got["ttfb_burst"]),
                "server_cpu_us_per_request": round(cpu[arm.name] / len(got["nonstream"]) * 1e6, 1),
                "concurrent": concurrent[arm.name],
            }
        return result


# ----------------------------------------------------------------------------- report


def markdown(result: dict[str, Any]) -> str:
    arms = result["arms"]
    cols = [c for c in ("direct", "proxy", "nginx") if c in arms]
    has_nginx = "nginx" in arms
    extra = ["proxy added", "proxy / direct"]
    if has_nginx:
        extra += ["nginx added", "proxy added / nginx added"]
    width = len(cols) + len(extra)
    lines = [
        "| measurement | " + " | ".join(cols + extra) + " |",
        "|---|" + "---:|" * width,
    ]
    rows = [
        ("non-streaming p50 (ms)", "nonstream", "p50_ms"),
        ("non-streaming p99 (ms)", "nonstream", "p99_ms"),
        ("stream TTFB p50 (ms)", "ttfb", "p50_ms"),
        ("stream TTFB p99 (ms)", "ttfb", "p99_ms"),
        ("burst stream TTFB p50 (ms)", "ttfb_burst", "p50_ms"),
        ("burst stream TTFB p99 (ms)", "ttfb_burst", "p99_ms"),
        ("76 KB request p50 (ms)", "nonstream_76k", "p50_ms"),
        ("76 KB request p99 (ms)", "nonstream_76k", "p99_ms"),
    ]
    for label, metric, stat in rows:
        cells = [f"{arms[c][metric][stat]:.3f}" for c in cols]
        proxy_added = arms["proxy"][metric][stat] - arms["direct"][metric][stat]
        cells += [
            f"{proxy_added:+.3f}",
            f"{arms['proxy'][metric][stat] / arms['direct'][metric][stat]:.2f}x",
        ]
        if has_nginx:
            nginx_added = arms["nginx"][metric][stat] - arms["direct"][metric][stat]
            ratio = f"{proxy_added / nginx_added:.1f}x" if nginx_added > 0.005 else "n/a"
            cells += [f"{nginx_added:+.3f}", ratio]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    def row(label: str, values: list[str]) -> None:
        lines.append(f"| {label} | " + " | ".join(values + [""] * len(extra)) + " |")

    row(
        "server CPU per small request (µs)",
        [f"{arms[c]['server_cpu_us_per_request']:.0f}" for c in cols],
    )
    n = arms["proxy"]["concurrent"]["streams"]
    row(f"{n} concurrent streams: errors", [str(arms[c]["concurrent"]["errors"]) for c in cols])
    row(
        f"{n} concurrent streams: wall (s)",
        [f"{arms[c]['concurrent']['wall_s']:.2f}" for c in cols],
    )
    ttfbs = []
    for c in cols:
        t = arms[c]["concurrent"]["ttfb"]
        ttfbs.append(f"{t['p50_ms']:.1f} / {t['p99_ms']:.1f}" if t else "n/a")
    row(f"{n} streams: TTFB p50 / p99 (ms)", ttfbs)
    row(
        f"{n} streams: server RSS (MiB)",
        [str(arms[c]["concurrent"]["server_rss_mib"]) for c in cols],
    )
    p50 = arms["proxy"]["nonstream"]["p50_ms"] - arms["direct"]["nonstream"]["p50_ms"]
    ttfb = arms["proxy"]["ttfb"]["p50_ms"] - arms["direct"]["ttfb"]["p50_ms"]
    burst = arms["proxy"]["ttfb_burst"]["p50_ms"] - arms["direct"]["ttfb_burst"]["p50_ms"]
    errors = arms["proxy"]["concurrent"]["errors"]

    def verdict(ok: bool) -> str:
        return "**pass**" if ok else "**miss**"

    lines += [
        "",
        f"- added p50 <= {TARGET_ADDED_P50_MS} ms: {verdict(p50 <= TARGET_ADDED_P50_MS)} ({p50:+.3f} ms)",
        (
            f"- added TTFB p50 <= {TARGET_ADDED_TTFB_MS} ms: "
            f"{verdict(ttfb <= TARGET_ADDED_TTFB_MS)} ({ttfb:+.3f} ms)"
        ),
        (
            f"- added burst-stream TTFB p50 <= {TARGET_ADDED_TTFB_MS} ms: "
            f"{verdict(burst <= TARGET_ADDED_TTFB_MS)} ({burst:+.3f} ms)"
        ),
        f"- {n} concurrent streams without errors: {verdict(errors == 0)} ({errors} errors)",
        f"- nginx: {result['nginx']}",
        (
            f"- load average at start / end: {result['machine']['loadavg_start'][0]:.2f} / "
            f"{result['machine']['loadavg_end'][0]:.2f}"
        ),
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer samples, 100 concurrent streams"
    )
    parser.add_argument("--no-nginx", action="store_true", help="skip the nginx reference arm")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not PROXY_BIN.exists():
        print(f"{PROXY_BIN} is missing: run `.venv/bin/pip install -e .`", file=sys.stderr)
        return 2
    sizes = QUICK if args.quick else FULL
    try:
        result = asyncio.run(run(sizes, want_nginx=not args.no_nginx))
    except BenchError as e:
        print(f"benchmark failed: {e}", file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    print(f"\nresults: {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
