"""The stock terminal endpoints, made owner-aware.

Registered by :class:`~jupyter_claude_pods.app.ClaudePodsApp` at the stock URLs;
extensions load alphabetically and Tornado takes the first matching rule, so these
serve ``/api/terminals`` and ``/terminals/websocket/<name>`` in place of
``jupyter_server_terminals``' own. They keep its auth resource (``terminals``) and
decorators, and add what a shared server needs: a person sees, uses and deletes
only their own terminals (others' are reported as 404, not 403, so their names do
not leak), and malformed input gets a JSON error instead of a stack trace.
"""

from __future__ import annotations

import json
import typing as t

from jupyter_server.auth.decorator import authorized
from jupyter_server_terminals.api_handlers import TerminalHandler, TerminalRootHandler
from jupyter_server_terminals.handlers import TermSocket
from tornado import web

from ..courses.handlers import CONFIG_SETTING, SERVICE_SETTING, ensure_service_started
from ..identity import username as _username
from .courses import CourseSession, resolve_course
from .manager import SandboxTerminalManager

#: Body fields of ``POST /api/terminals`` we accept (``cwd`` is the stock frontend's;
#: a server-side path means nothing inside a sandbox, so it is ignored). ``course`` and
#: ``stage`` open a course terminal (see :func:`.courses.resolve_course`).
CREATE_FIELDS = frozenset({"name", "cwd", "course", "stage"})


def _manager(handler: web.RequestHandler) -> SandboxTerminalManager:
    """The terminal manager (these handlers are only registered when it is ours)."""
    manager = handler.settings["terminal_manager"]
    assert isinstance(manager, SandboxTerminalManager)
    return manager


class OwnedTerminalRootHandler(TerminalRootHandler):
    """``GET``/``POST /api/terminals``."""

    @web.authenticated
    @authorized
    def get(self) -> None:
        """List the caller's terminals."""
        self.finish(json.dumps(_manager(self).list_for(_username(self))))

    @web.authenticated
    @authorized
    async def post(self) -> None:
        """Create a terminal (and its sandbox) for the caller, optionally for a course."""
        data = self.get_json_body() or {}
        if not isinstance(data, dict):
            raise web.HTTPError(400, "the request body must be a JSON object")
        unknown = sorted(set(data) - CREATE_FIELDS)
        if unknown:
            raise web.HTTPError(400, f"unknown field(s): {', '.join(unknown)}")
        name = data.get("name")
        if name is not None and not isinstance(name, str):
            raise web.HTTPError(400, "name must be a string")
        owner = _username(self)
        course = await self._course(owner, data)
        model = _manager(self).create(name=name, owner=owner, course=course)
        self.finish(json.dumps(model))

    async def _course(self, owner: str, data: dict[str, t.Any]) -> CourseSession | None:
        """The course the body asks for (``course``, optional ``stage``), resolved."""
        course_id, stage = data.get("course"), data.get("stage")
        if course_id is None:
            if stage is not None:
                raise web.HTTPError(400, "stage needs a course")
            return None
        await ensure_service_started(self)
        return await resolve_course(
            self.settings.get(SERVICE_SETTING),
            self.settings.get(CONFIG_SETTING),
            owner,
            course_id,
            stage,
        )


class OwnedTerminalHandler(TerminalHandler):
    """``GET``/``DELETE /api/terminals/<name>``."""

    def _check_owner(self, name: str) -> None:
        term = _manager(self).terminals.get(name)
        if term is None or term.owner != _username(self):
            raise web.HTTPError(404, f"Terminal not found: {name}")

    @web.authenticated
    @authorized
    def get(self, name: str) -> None:
        """One of the caller's terminals."""
        self._check_owner(name)
        self.finish(json.dumps(self.terminal_manager.get(name)))

    @web.authenticated
    @authorized
    async def delete(self, name: str) -> None:
        """Close one of the caller's terminals; its sandbox is deleted."""
        self._check_owner(name)
        await self.terminal_manager.terminate(name, force=True)
        self.set_status(204)
        self.finish()


class OwnedTermSocket(TermSocket):
    """``/terminals/websocket/<name>``: the stock socket, limited to the caller's terminals."""

    def initialize(self, name: str, term_manager: t.Any = None, **kwargs: t.Any) -> None:  # type: ignore[override]
        # Our handlers are registered before the terminals extension has created its
        # manager, so take it from the settings at request time.
        super().initialize(name, term_manager or self.settings["terminal_manager"], **kwargs)

    async def get(self, *args: t.Any, **kwargs: t.Any) -> None:
        """Refuse to attach anyone but the owner (after the stock auth checks)."""
        if self.current_user:
            term = _manager(self).terminals.get(args[0])
            if term is not None and term.owner != _username(self):
                raise web.HTTPError(404)
        await super().get(*args, **kwargs)

    async def on_message(self, message: t.Any) -> None:  # type: ignore[override]
        """Ignore (and log) malformed frames instead of failing the connection."""
        try:
            command = json.loads(message)
            valid = isinstance(command, list) and command and isinstance(command[0], str)
            if valid and command[0] == "stdin":
                valid = len(command) >= 2 and isinstance(command[1], str)
            elif valid and command[0] == "set_size":
                valid = len(command) >= 3 and all(
                    isinstance(v, int) and 0 < v < 10_000 for v in command[1:3]
                )
        except (TypeError, ValueError):
            valid = False
        if not valid:
            self.log.warning("claude-pods: ignoring malformed terminal message %.80r", message)
            return
        await super().on_message(message)


default_handlers: list[tuple[str, type[t.Any]]] = [
    (r"/api/terminals", OwnedTerminalRootHandler),
    (r"/api/terminals/(\w+)", OwnedTerminalHandler),
    (r"/terminals/websocket/(\w+)", OwnedTermSocket),
]
