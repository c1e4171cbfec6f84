"""Start-to-prompt time of ``bash`` in a local sandbox (not a test: run it by hand).

    .venv/bin/python -m tests.local.bench_prompt [-n 20]

Measures, on one event loop as the server does, from ``LocalBackend.start()`` (session
directory, seeded home, bwrap, the relay) to the first prompt read from the PTY, for
each of *n* sandboxes in a row; prints the median and the spread. The embedded proxy
runs (a dummy key, an upstream that is never contacted), so the relay starts as in
production.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from jupyter_claude_pods.sandbox.local import LocalBackend
from jupyter_claude_pods.sandbox.spec import SandboxSpec


async def once(backend: LocalBackend, i: int) -> tuple[float, float]:
    began = time.perf_counter()
    spec = SandboxSpec(session_id=f"bench{i:03d}", user="bench", terminal=str(i))
    sandbox = await backend.start(spec, lambda _line: None)
    started = time.perf_counter()
    stream = await backend.connect(sandbox)
    out = b""
    while b"$ " not in out:
        out += await stream.read()
    prompt = time.perf_counter()
    await stream.close()
    await backend.stop(sandbox)
    return (prompt - began) * 1000, (started - began) * 1000


async def main(n: int, relay: bool) -> None:
    base = Path(tempfile.mkdtemp(prefix="cpbench-", dir="/tmp"))
    base.chmod(0o711)
    os.environ["ANTHROPIC_API_KEY"] = "sk-ant-bench-dummy-key-0123456789"
    os.environ["CLAUDE_PODS_UPSTREAM_URL"] = "http://127.0.0.1:9"  # never contacted
    backend = LocalBackend(
        home_base=str(base / "state"),
        command=["bash", "--norc", "--noprofile", "-i"],
        extra_env={"PS1": "$ "},
        forward_proxy=relay,
    )
    try:
        await backend.startup()
        await once(backend, 999)  # warm the page cache
        results = [await once(backend, i) for i in range(n)]
    finally:
        await backend.shutdown()
        shutil.rmtree(base, ignore_errors=True)
    prompts = [p for p, _ in results]
    starts = [s for _, s in results]
    print(
        f"{'with' if relay else 'without'} the proxy relay, n={n}: prompt median "
        f"{statistics.median(prompts):.1f} ms (min {min(prompts):.1f}, max {max(prompts):.1f}); "
        f"start() median {statistics.median(starts):.1f} ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.n, relay=True))
    asyncio.run(main(args.n, relay=False))
