"""Sandbox state changes are ``jupyter_events`` events (``events/sandbox.yaml``).

The Courses panel shows a sandbox's state from these instead of polling
``/api/terminals``. Terminals are driven through the stock endpoints and the fake
Kubernetes API; events are read by a listener on the server's own event logger, the
same path the ``/api/events/subscribe`` websocket takes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from jupyter_claude_pods.events import SANDBOX_SCHEMA_ID, SANDBOX_SCHEMA_PATH

from .conftest import SECRET_KEY
from .test_courses import PVC, course_config, write_courses

FIELDS = {"terminal", "user", "state", "reason", "course", "stage"}


class SandboxEvents:
    """Every sandbox event the server emits, in order, with a way to wait for more."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        schema = yaml.safe_load(SANDBOX_SCHEMA_PATH.read_text())
        self._validator = jsonschema.Draft7Validator(
            {k: v for k, v in schema.items() if k not in ("version", "personal-data")}
        )

    async def listener(self, logger: Any, schema_id: str, data: dict[str, Any]) -> None:
        assert schema_id == SANDBOX_SCHEMA_ID
        self._validator.validate(data)
        self.events.append(dict(data))
        self._changed.set()

    def states(self, terminal: str) -> list[tuple[str, str | None]]:
        return [(e["state"], e["reason"]) for e in self.events if e["terminal"] == terminal]

    async def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 20
    ) -> list[dict[str, Any]]:
        """The events once ``predicate(events)`` holds; re-checked after every event."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate(self.events):
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), deadline - loop.time())
            except asyncio.TimeoutError:
                raise AssertionError(f"events never matched; got {self.events}") from None
        return self.events

    async def wait_state(self, terminal: str, state: str) -> list[tuple[str, str | None]]:
        await self.wait_for(lambda _: any(s == state for s, _r in self.states(terminal)))
        return self.states(terminal)


@pytest.fixture
def sandbox_events(jp_serverapp: Any) -> Iterator[SandboxEvents]:
    log = SandboxEvents()
    event_logger = jp_serverapp.event_logger
    event_logger.add_listener(schema_id=SANDBOX_SCHEMA_ID, listener=log.listener)
    yield log
    event_logger.remove_listener(schema_id=SANDBOX_SCHEMA_ID, listener=log.listener)


def assert_no_secrets(events: list[dict[str, Any]]) -> None:
    """Only the listed fields; never the session token (``cpp1.…``) or the real key."""
    for event in events:
        assert set(event) == FIELDS, event
        text = json.dumps(event)
        assert "cpp1." not in text, event
        assert SECRET_KEY not in text, event


async def test_schema_is_registered(jp_serverapp: Any) -> None:
    schema = jp_serverapp.event_logger.schemas.get(SANDBOX_SCHEMA_ID)
    assert str(schema.version) == "1"


async def test_starting_running_terminated(
    jp_fetch: Any, open_terminal: Any, sandbox_events: SandboxEvents
) -> None:
    name, term = await open_terminal()
    await term.expect("$ ")
    states = await sandbox_events.wait_state(name, "running")
    assert states == [("starting", None), ("running", None)]
    first = sandbox_events.events[0]
    assert first["user"]
    assert (first["course"], first["stage"]) == (None, None)

    await jp_fetch("api", "terminals", name, method="DELETE")
    states = await sandbox_events.wait_state(name, "terminated")
    assert states == [("starting", None), ("running", None), ("terminated", None)]
    assert_no_secrets(sandbox_events.events)


async def test_program_exit(open_terminal: Any, sandbox_events: SandboxEvents) -> None:
    name, term = await open_terminal()
    await term.expect("$ ")
    term.stdin("exit 3\r")
    states = await sandbox_events.wait_state(name, "exited")
    assert states == [("starting", None), ("running", None), ("exited", "exit status 3")]


async def test_failure_has_a_reason_and_terminated_follows(
    jp_fetch: Any, fake_kube: Any, open_terminal: Any, sandbox_events: SandboxEvents
) -> None:
    fake_kube.faults.forbid("create", "pods")
    name, term = await open_terminal()
    await term.expect("open a new one to retry")
    states = await sandbox_events.wait_state(name, "failed")
    assert states[0] == ("starting", None)
    assert states[-1][0] == "failed"
    assert "not allowed to create pods" in (states[-1][1] or "")
    assert "running" not in [s for s, _ in states]

    # A failed terminal stays listed until closed; closing it is announced too.
    await jp_fetch("api", "terminals", name, method="DELETE")
    assert (await sandbox_events.wait_state(name, "terminated"))[-1] == ("terminated", None)
    assert_no_secrets(sandbox_events.events)


async def test_pod_killed_mid_session(
    fake_kube: Any, open_terminal: Any, sandbox_events: SandboxEvents
) -> None:
    name, term = await open_terminal()
    await term.expect("$ ")
    (pod,) = [key.split("/", 1)[1] for key in fake_kube.pods if key.startswith("sandboxes/")]
    fake_kube.kill_pod(pod, reason="OOMKilled", exit_code=137)
    states = await sandbox_events.wait_state(name, "failed")
    assert [s for s, _ in states] == ["starting", "running", "failed"]
    assert "ran out of memory" in (states[-1][1] or "")


async def test_a_broken_event_pipeline_never_breaks_the_terminal(
    jp_serverapp: Any, open_terminal: Any, server_log: Any, sandbox_events: SandboxEvents
) -> None:
    # (with no listener or handler at all, jupyter_events skips emitting altogether)
    def broken(schema_id: str, data: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("event handler exploded")

    event_logger = jp_serverapp.event_logger
    event_logger.add_modifier(schema_id=SANDBOX_SCHEMA_ID, modifier=broken)
    try:
        _name, term = await open_terminal()
        term.stdin("echo $((6*7))\r")
        await term.expect("42")
    finally:
        event_logger.remove_modifier(schema_id=SANDBOX_SCHEMA_ID, modifier=broken)
    assert any("announcing state starting" in line for line in server_log.lines)
    assert any("announcing state running" in line for line in server_log.lines)
    assert sandbox_events.events == []


class TestCourseTerminal:
    @pytest.fixture
    def extra_config(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
        monkeypatch.delenv("CLAUDE_PODS_COURSES_DIR", raising=False)
        root = write_courses(tmp_path / "courses")
        return {
            **course_config(root, tmp_path / "progress.sqlite3"),
            "KubernetesBackend": {"courses_volume": PVC},
        }

    async def test_events_name_the_course_and_stage(
        self, jp_fetch: Any, sandbox_events: SandboxEvents
    ) -> None:
        body = json.dumps({"course": "plain", "stage": 1})
        model = json.loads((await jp_fetch("api", "terminals", method="POST", body=body)).body)
        await sandbox_events.wait_state(model["name"], "running")
        assert {(e["course"], e["stage"]) for e in sandbox_events.events} == {("plain", 1)}
        assert_no_secrets(sandbox_events.events)
