"""The doctor's pure parts: target parsing, image names, probe output, the entry point."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from jupyter_claude_pods.doctor.checks import PERMISSIONS, normalise_image
from jupyter_claude_pods.doctor.egress import (
    ProbeError,
    parse_probe_output,
    parse_target,
    probe_command,
    proxy_target,
)

ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("example.com:443", "example.com:443"),
        ("10.43.0.1:0443", "10.43.0.1:443"),
        ("[::1]:8787", "[::1]:8787"),
    ],
)
def test_parse_target(text: str, expected: str) -> None:
    assert parse_target(text) == expected


@pytest.mark.parametrize(
    "text", ["example.com", ":443", "host:0", "host:70000", "::1:443", "[nothost]:1", "a b:1"]
)
def test_parse_target_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_target(text)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "http://claude-pods-proxy.claude-pods.svc.cluster.local:8787",
            "claude-pods-proxy.claude-pods.svc.cluster.local:8787",
        ),
        ("http://proxy", "proxy:80"),
        ("https://proxy/", "proxy:443"),
        ("http://[fd00::1]:8787", "[fd00::1]:8787"),
        ("", None),
    ],
)
def test_proxy_target(url: str, expected: str | None) -> None:
    assert proxy_target(url) == expected


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("library/busybox:1.36", "docker.io/library/busybox:1.36"),
        ("localhost/claude-pods-sandbox:0.1.0", "localhost/claude-pods-sandbox:0.1.0"),
        ("registry.lab:5000/sandbox:0.1.0", "registry.lab:5000/sandbox:0.1.0"),
        ("registry.lab:5000/sandbox", "registry.lab:5000/sandbox:latest"),
        ("ghcr.io/x/y@sha256:abc", "ghcr.io/x/y@sha256:abc"),
    ],
)
def test_normalise_image(image: str, expected: str) -> None:
    assert normalise_image(image) == expected


def test_probe_output_is_found_among_terminal_noise() -> None:
    text = (
        "noise\r\nCLAUDE-PODS-PROBE a:1 a:1 refused Connection refused\r\n"
        "CLAUDE-PODS-PROBE @kubernetes 10.43.0.1:443 connected \r\n"
    )
    assert parse_probe_output(text) == [
        {"target": "a:1", "address": "a:1", "result": "refused", "code": "Connection refused"},
        {"target": "@kubernetes", "address": "10.43.0.1:443", "result": "connected", "code": ""},
    ]
    with pytest.raises(ProbeError):
        parse_probe_output("bash: command not found\r\n")


def test_probe_script_runs_under_bash() -> None:
    """The script as sent (comments stripped), with the environment a pod has."""
    with socket.socket() as listening, socket.socket() as unused:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        unused.bind(("127.0.0.1", 0))
        open_port = listening.getsockname()[1]
        closed = unused.getsockname()[1]
        argv = probe_command(2, [f"127.0.0.1:{closed}", "[::1]:" + str(closed), "@kubernetes"])
        out = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            check=True,
            env={
                "PATH": "/usr/local/bin:/usr/bin:/bin",
                "KUBERNETES_SERVICE_HOST": "127.0.0.1",
                "KUBERNETES_SERVICE_PORT": str(open_port),
            },
            timeout=30,
        ).stdout
    results = {r["target"]: r for r in parse_probe_output(out)}
    assert results[f"127.0.0.1:{closed}"]["result"] == "refused"
    assert results[f"127.0.0.1:{closed}"]["code"] == "Connection refused"
    assert results[f"[::1]:{closed}"]["result"] in (
        "refused",
        "unreachable",
    )  # no IPv6: unreachable
    assert results["@kubernetes"] == {
        "target": "@kubernetes",
        "address": f"127.0.0.1:{open_port}",
        "result": "connected",
        "code": "",
    }


def test_permissions_match_the_contract_role() -> None:
    """The verbs checked are exactly those of the Role in manifests/base."""
    labels = {p.label for p in PERMISSIONS}
    assert labels == {
        *(f"pods {v}" for v in ("create", "get", "list", "watch", "delete")),
        *(f"pods/{s} {v}" for s in ("exec", "attach") for v in ("create", "get")),
        *(f"events {v}" for v in ("get", "list", "watch")),
    }


def test_console_script_is_declared() -> None:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["jupyter-claude-pods"] == "jupyter_claude_pods.doctor.app:main"


def test_without_a_subcommand_lists_doctor() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "jupyter_claude_pods.doctor"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "doctor" in proc.stdout
