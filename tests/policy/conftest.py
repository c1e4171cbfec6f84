"""Fixtures: the fake Anthropic API on the test's loop, the real CLI, a workspace."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_claude_pods.policy import CLAUDE_CODE_VERSION
from tests.fakes.anthropic_api import FakeAnthropicAPI

from .sandbox import FAKE_KEY, Workspace, require, require_bwrap, require_claude, run

_versions: dict[str, str] = {}


@pytest.fixture
def fake_api(io_loop: Any) -> Iterator[FakeAnthropicAPI]:
    api = FakeAnthropicAPI((FAKE_KEY,))
    io_loop.run_sync(api.start)
    yield api
    io_loop.run_sync(api.stop)


@pytest.fixture
def bwrap() -> str:
    return require_bwrap()


@pytest.fixture
def claude(io_loop: Any) -> str:
    """The real CLI, and only the pinned version (the managed settings refuse others)."""
    path = require_claude()
    if path not in _versions:

        async def version() -> str:
            return (await run([path, "--version"], {"PATH": "/usr/bin:/bin"})).stdout

        _versions[path] = io_loop.run_sync(version)
    if not _versions[path].startswith(f"{CLAUDE_CODE_VERSION} "):
        require("Claude Code CLI", f"{path} is {_versions[path]!r}, not {CLAUDE_CODE_VERSION}")
    return path


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    workspace = Workspace(tmp_path)
    workspace.create()
    return workspace
