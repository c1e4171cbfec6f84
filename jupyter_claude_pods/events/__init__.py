"""Structured events (jupyter_events) this extension emits.

Progress changes and sandbox state changes are events rather than a bespoke push channel so that the stock
``/api/events/subscribe`` websocket, its authorization and any configured event
handlers (audit logs) all apply without extra code.
"""

from __future__ import annotations

import logging
import typing as t
from collections.abc import Callable
from pathlib import Path

#: The ``$id`` of the progress schema; consumers filter events on it.
PROGRESS_SCHEMA_ID = "https://jupyter-claude-pods.readthedocs.io/events/progress"
#: Its YAML file, shipped inside the package.
PROGRESS_SCHEMA_PATH = Path(__file__).with_name("progress.yaml")
#: The ``$id`` of the sandbox (terminal state) schema.
SANDBOX_SCHEMA_ID = "https://jupyter-claude-pods.readthedocs.io/events/sandbox"
#: Its YAML file, shipped inside the package.
SANDBOX_SCHEMA_PATH = Path(__file__).with_name("sandbox.yaml")


def register_progress_schema(event_logger: t.Any) -> None:
    """Register the progress schema once (a second ExtensionApp init must not fail)."""
    if PROGRESS_SCHEMA_ID not in event_logger.schemas:
        event_logger.register_event_schema(PROGRESS_SCHEMA_PATH)


def register_sandbox_schema(event_logger: t.Any) -> None:
    """Register the sandbox schema once (a second ExtensionApp init must not fail)."""
    if SANDBOX_SCHEMA_ID not in event_logger.schemas:
        event_logger.register_event_schema(SANDBOX_SCHEMA_PATH)


def progress_emitter(
    event_logger: t.Any, log: logging.Logger | logging.LoggerAdapter[t.Any]
) -> Callable[[dict[str, t.Any]], None]:
    """A callable the course service hands each progress change to.

    The change is already stored when it is announced, so a failing event (a schema
    mismatch, a broken handler) is logged instead of failing the request that made it.
    """

    def emit(data: dict[str, t.Any]) -> None:
        try:
            event_logger.emit(schema_id=PROGRESS_SCHEMA_ID, data=data)
        except Exception:
            log.exception("claude-pods: could not emit progress event %r", data)

    return emit
