"""Fixtures of the image smoke tests (how the images are built: :mod:`.builder`)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator

import pytest

from .builder import Bases, Podman, Timing, prepare_bases


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "images: builds container images with podman (slow on a cold cache)"
    )


@pytest.fixture(scope="session")
def podman() -> Podman:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (scripts/test.sh installs it with apt-get)")
    if os.geteuid() != 0:
        pytest.skip("the image tests need root: debootstrap and rootful podman")
    tool = Podman()
    info = tool.run("info", "--format", "{{.Host.OCIRuntime.Name}}", check=False)
    if info.returncode != 0:
        pytest.skip(f"podman cannot run here: {info.stderr.strip()[-500:]}")
    return tool


_TIMING = Timing({})


@pytest.fixture(scope="session")
def image_timing() -> Iterator[Timing]:
    start = time.monotonic()
    yield _TIMING
    _TIMING.steps["image tests in all"] = time.monotonic() - start


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line with the preparation times, to watch the CI budget (cold vs cached)."""
    if _TIMING.steps:
        report = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in _TIMING.steps.items())
        terminalreporter.write_line(f"image test timings: {report}")


@pytest.fixture(scope="session")
def bases(podman: Podman, image_timing: Timing) -> Bases:
    """The local stand-ins for the Containerfiles' BASE_IMAGE and NODE_IMAGE."""
    return prepare_bases(podman, image_timing)
