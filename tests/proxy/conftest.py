"""Fixtures: the fake Anthropic API and proxies in front of it, on the test's event loop."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from claude_pods_proxy.app import ProxyServer
from claude_pods_proxy.config import ProxyConfig

from tests.fakes.anthropic_api import FakeAnthropicAPI

from .helpers import REAL_KEY, SECRET, Canary

MakeProxy = Callable[..., Awaitable[ProxyServer]]


@pytest.fixture
def fake_api(io_loop: Any) -> Iterator[FakeAnthropicAPI]:
    api = FakeAnthropicAPI((REAL_KEY,))
    io_loop.run_sync(api.start)
    yield api
    io_loop.run_sync(api.stop)


@pytest.fixture
def db_path(tmp_path: Any) -> str:
    return str(tmp_path / "usage.sqlite3")


def make_config(upstream: str, db_path: str, **overrides: Any) -> ProxyConfig:
    options: dict[str, Any] = {
        "token_secret": SECRET,
        "key_value": REAL_KEY,
        "host": "127.0.0.1",
        "port": 0,
        "upstream_url": upstream,
        "db_path": db_path,
        "flush_interval": 0.05,
    }
    options.update(overrides)
    if "key_file" in overrides:
        options.pop("key_value")
    return ProxyConfig(**options)


@pytest.fixture
def make_proxy(io_loop: Any, fake_api: FakeAnthropicAPI, db_path: str) -> Iterator[MakeProxy]:
    started: list[ProxyServer] = []

    async def make(**overrides: Any) -> ProxyServer:
        proxy = ProxyServer(make_config(fake_api.url, db_path, **overrides))
        await proxy.start()
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        io_loop.run_sync(proxy.stop)


@pytest.fixture
def proxy_options() -> dict[str, Any]:
    """Config overrides for the ``proxy`` fixture (tests parametrize this)."""
    return {}


@pytest.fixture
def proxy(io_loop: Any, make_proxy: MakeProxy, proxy_options: dict[str, Any]) -> ProxyServer:
    async def make() -> ProxyServer:
        return await make_proxy(**proxy_options)

    result: ProxyServer = io_loop.run_sync(make)
    return result


@pytest.fixture
def canary(io_loop: Any) -> Iterator[Canary]:
    c = Canary()
    io_loop.run_sync(c.start)
    yield c
    io_loop.run_sync(c.stop)


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def access_lines() -> Iterator[list[str]]:
    """Every access-log line written during the test."""
    logger = logging.getLogger("claude_pods_proxy.access")
    handler = _Capture()
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(old_level)


@pytest.fixture
def all_log_lines() -> Iterator[list[str]]:
    """Every log line of every logger (to prove secrets never appear)."""
    root = logging.getLogger()
    handler = _Capture()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    access = logging.getLogger("claude_pods_proxy.access")
    old_access = access.level
    access.setLevel(logging.INFO)
    yield handler.lines
    root.removeHandler(handler)
    root.setLevel(old_level)
    access.setLevel(old_access)
