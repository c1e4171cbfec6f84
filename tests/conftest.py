"""Shared fixtures: pytest-jupyter's server, plus what every server test uses."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

pytest_plugins = ["pytest_jupyter.jupyter_server"]


class LogCapture(logging.Handler):
    """Every formatted log line of the server, to check secrets never appear."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def server_log(jp_serverapp: Any) -> Iterator[LogCapture]:
    capture = LogCapture()
    loggers = {jp_serverapp.log, logging.getLogger()}
    for logger in loggers:
        logger.addHandler(capture)
    yield capture
    for logger in loggers:
        logger.removeHandler(capture)


@pytest.fixture
def manager(jp_serverapp: Any) -> Any:
    """The server's terminal manager."""
    return jp_serverapp.web_app.settings["terminal_manager"]
