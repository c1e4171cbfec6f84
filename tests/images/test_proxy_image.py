"""Smoke tests of the key proxy image: built with podman (see conftest), run without network.

The proxy starts as it does in its Deployment (key and token secret as read-only files,
``/data`` a volume, read-only root), then its HEALTHCHECK command must pass, and fail when
pointed at a port nobody listens on.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_claude_pods import __version__

from .builder import Bases, Podman, Timing, build_image

pytestmark = [pytest.mark.images, pytest.mark.timeout(1500)]

PLACEHOLDER_KEY = "test-upstream-key-not-real"


@pytest.fixture(scope="module")
def image(podman: Podman, bases: Bases, image_timing: Timing) -> str:
    return build_image(podman, bases, image_timing, "proxy")


def _config(podman: Podman, image: str) -> dict[str, Any]:
    config = json.loads(podman.run("image", "inspect", image).stdout)[0]["Config"]
    assert isinstance(config, dict)
    return config


def _wait_for_log(podman: Podman, container: str, needle: str, timeout: float) -> str:
    """Follow the container's log until it contains *needle*; everything read so far."""
    follow = subprocess.Popen(
        ["podman", "logs", "--follow", container],
        env=podman.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        bufsize=0,
    )
    assert follow.stdout is not None
    fd = follow.stdout.fileno()
    seen = b""
    deadline = time.monotonic() + timeout
    try:
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([fd], [], [], left)
            chunk = os.read(fd, 65536) if ready else b""
            if not chunk:
                break
            seen += chunk
            if needle.encode() in seen:
                return seen.decode(errors="replace")
    finally:
        follow.kill()
        follow.wait()
    raise AssertionError(
        f"{needle!r} not logged within {timeout}s:\n{seen.decode(errors='replace')}"
    )


@pytest.fixture
def running_proxy(podman: Podman, image: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A proxy container as in the Deployment; (container id, its log up to 'listening')."""
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "api-key").write_text(PLACEHOLDER_KEY)
    (secrets_dir / "secret").write_text(secrets.token_urlsafe(48))
    for path in (secrets_dir, *secrets_dir.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    started = podman.run(
        "run",
        "--detach",
        "--network=none",
        "--read-only",
        "--read-only-tmpfs=false",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
        "--tmpfs=/data:rw,U",
        f"--volume={secrets_dir}:/run/secrets/claude-pods:ro",
        "--env=CLAUDE_PODS_KEY_FILE=/run/secrets/claude-pods/api-key",
        "--env=CLAUDE_PODS_TOKEN_SECRET_FILE=/run/secrets/claude-pods/secret",
        image,
    )
    container = started.stdout.strip().splitlines()[-1]
    try:
        log = _wait_for_log(podman, container, "claude-pods-proxy listening on", timeout=60)
        yield container, log
    finally:
        podman.run("rm", "--force", "--time=0", container, check=False)


def test_healthcheck_passes_when_serving_and_fails_otherwise(
    podman: Podman, image: str, running_proxy: tuple[str, str]
) -> None:
    container, log = running_proxy
    assert "0.0.0.0:8787" in log
    assert PLACEHOLDER_KEY not in log
    # podman shows the docker-format config's health check at the top level.
    health = json.loads(podman.run("image", "inspect", image).stdout)[0]["Healthcheck"]
    assert health["Test"][0] == "CMD"
    check = health["Test"][1:]
    passed = podman.run("exec", container, *check, check=False)
    assert passed.returncode == 0, passed.stderr
    failed = podman.run("exec", "--env=CLAUDE_PODS_PROXY_PORT=9", container, *check, check=False)
    assert failed.returncode != 0
    assert "Connection refused" in failed.stderr
    status = podman.run(
        "exec",
        container,
        "python3",
        "-c",
        "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8787/healthz').read().decode())",
    )
    assert json.loads(status.stdout)["status"] == "ok"
    # The server runs as uid 1000 and wrote its store into the /data volume.
    who = podman.run("exec", container, "sh", "-c", "id -u; ls /data").stdout.split()
    assert who[0] == "1000"
    assert "proxy.sqlite3" in who[1:]


def test_image_holds_the_proxy_not_the_jupyter_server(podman: Podman, image: str) -> None:
    probe = (
        "import importlib.util as u, sys;"
        "names = ['claude_pods_proxy', 'tornado', 'prometheus_client', 'jupyter_server',"
        " 'kubernetes_asyncio', 'pip'];"
        "print(' '.join(n for n in names if u.find_spec(n)))"
    )
    found = podman.run(
        "run", "--rm", "--network=none", "--entrypoint=python3", image, "-c", probe
    ).stdout.split()
    # pip stays in the venv (it is how the image was built; it cannot reach anything from
    # the proxy's network policy anyway), the Jupyter server's dependencies do not.
    assert found == ["claude_pods_proxy", "tornado", "prometheus_client", "pip"]


def test_runs_as_non_root_with_nothing_writable_but_data_and_tmp(
    podman: Podman, image: str
) -> None:
    config = _config(podman, image)
    assert config["User"] == "1000:1000"
    assert config["Entrypoint"] == ["/opt/claude-pods/bin/claude-pods-proxy"]
    assert config["Cmd"] == ["serve"]
    script = (
        "find / \\( -path /proc -o -path /sys -o -path /dev \\) -prune -o -writable -print"
        " 2>/dev/null || true"
    )
    writable = podman.run(
        "run", "--rm", "--network=none", "--entrypoint=sh", image, "-c", script
    ).stdout.split()
    assert sorted(writable) == ["/data", "/tmp", "/var/tmp"]  # /var/tmp: a link to /tmp
    setuid = podman.run(
        "run",
        "--rm",
        "--network=none",
        "--user=0",
        "--entrypoint=find",
        image,
        "/",
        "-xdev",
        "-perm",
        "/6000",
        "-type",
        "f",
    ).stdout
    assert setuid == ""


def test_labels_and_port(podman: Podman, image: str) -> None:
    config = _config(podman, image)
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "claude-pods-proxy"
    assert labels["org.opencontainers.image.version"] == __version__
    assert labels["org.opencontainers.image.licenses"] == "BSD-3-Clause"
    assert "8787/tcp" in config["ExposedPorts"]
