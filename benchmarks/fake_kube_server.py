"""Run the fake Kubernetes API (tests/fakes/kube_api.py) in a process of its own.

Usage::

    python benchmarks/fake_kube_server.py KUBECONFIG_PATH [--no-validate]

Starts ``FakeKubeAPI(namespaces=("default", "sandboxes"))`` on 127.0.0.1 (ephemeral
port), writes a kubeconfig for it (context namespace ``sandboxes``) to KUBECONFIG_PATH,
prints ``FAKE_KUBE_URL=<url>`` on stdout once it accepts connections, and runs until
SIGTERM or SIGINT; then it stops the fake, which kills every pod and exec process.

The benchmark runs it separately from the Jupyter server so that the server's CPU
time is its own, as it is against a real cluster (where the API server and kubelet
run elsewhere).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.fakes.kube_api import FakeKubeAPI


async def serve(kubeconfig: Path, validate: bool) -> None:
    api = FakeKubeAPI(namespaces=("default", "sandboxes"), validate=validate)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await api.start()
    try:
        api.write_kubeconfig(kubeconfig, namespace="sandboxes")
        print(f"FAKE_KUBE_URL={api.url}", flush=True)
        await stop.wait()
    finally:
        await api.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kubeconfig", type=Path, help="where to write the kubeconfig")
    parser.add_argument(
        "--no-validate",
        action="store_true",
        help="skip OpenAPI schema validation of created pods (faster pod creation)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="fake-kube %(levelname)s %(message)s")
    asyncio.run(serve(args.kubeconfig, validate=not args.no_validate))
    return 0


if __name__ == "__main__":
    sys.exit(main())
