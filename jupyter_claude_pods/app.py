"""The Jupyter Server extension: swaps in the sandbox terminal manager and cleans up.

The documented way to use it is configuration::

    c.TerminalsExtensionApp.terminal_manager_class = (
        "jupyter_claude_pods.terminals.SandboxTerminalManager"
    )

When that trait was left at its default, this extension sets it on the terminals
extension before that one builds its manager (extensions load alphabetically, and
``jupyter_claude_pods`` sorts first), so installing the package is enough.
"""

from __future__ import annotations

import asyncio
import typing as t

from jupyter_server.extension.application import ExtensionApp
from jupyter_server_terminals.terminalmanager import TerminalManager
from traitlets import Bool

from .courses import handlers as course_handlers
from .courses.config import CoursesConfig
from .events import progress_emitter, register_progress_schema, register_sandbox_schema
from .terminals import SandboxTerminalManager
from .terminals import handlers as terminal_handlers

if t.TYPE_CHECKING:
    from .courses.progress import CourseService


class ClaudePodsApp(ExtensionApp):
    """Terminals on sandbox pods, with a read-only Claude Code inside."""

    name = "jupyter_claude_pods"
    load_other_extensions = True

    replace_terminal_manager = Bool(
        True,
        config=True,
        help="""Install the sandbox terminal manager when the terminals extension still uses
        its default one. Set False to keep local terminals (and this extension inert for
        them).""",
    )

    #: The course service (see :mod:`jupyter_claude_pods.courses`), once initialized.
    courses: CourseService | None = None
    _courses_started: asyncio.Task[None] | None = None

    def _terminals_app(self) -> t.Any:
        assert self.serverapp is not None
        point = self.serverapp.extension_manager.extension_points.get("jupyter_server_terminals")
        return point.app if point is not None else None

    def _manager_class(self) -> type[t.Any] | None:
        terminals = self._terminals_app()
        return None if terminals is None else terminals.terminal_manager_class  # type: ignore[no-any-return]

    def _init_courses(self) -> None:
        """Create the course service (started later, on the running loop).

        It is in the settings under ``claude_pods_courses`` for the REST handlers and
        the terminal manager, whatever the terminals extension does.
        """
        from .courses.catalog import CourseCatalog
        from .courses.progress import CourseService
        from .courses.store import ProgressStore

        assert self.serverapp is not None
        config = CoursesConfig(parent=self)
        event_logger = self.serverapp.event_logger
        register_progress_schema(event_logger)
        register_sandbox_schema(event_logger)  # emitted by the terminal manager
        root = config.courses_root()
        self.courses = CourseService(
            CourseCatalog(root),
            ProgressStore(config.progress_path()),
            progress_emitter(event_logger, self.log),
            self.log,
        )
        self.settings[course_handlers.SERVICE_SETTING] = self.courses
        self.settings[course_handlers.CONFIG_SETTING] = config
        self.settings[course_handlers.START_SETTING] = self.ensure_courses_started
        if root is None:
            self.log.info("claude-pods: no courses directory configured; no courses offered")
        else:
            self.log.info("claude-pods: courses from %s", root)

    async def ensure_courses_started(self) -> None:
        """Open the progress store and load the catalog, exactly once.

        Requests may arrive before the server calls our start hook (it runs as a loop
        callback), so the handlers await this too. A failed start (say, an unwritable
        database directory) is retried by the next caller, so fixing it needs no restart.
        """
        if self.courses is None:
            return
        task = self._courses_started
        if task is None or (task.done() and (task.cancelled() or task.exception())):
            task = self._courses_started = asyncio.create_task(self.courses.start())
        await asyncio.shield(task)

    def initialize_settings(self) -> None:
        """Set up courses; swap the terminal manager class unless the user chose one."""
        self._init_courses()
        terminals = self._terminals_app()
        if terminals is None:
            self.log.warning("claude-pods: jupyter_server_terminals is not enabled; no terminals")
            return
        current = terminals.terminal_manager_class
        if current is TerminalManager and self.replace_terminal_manager:
            terminals.terminal_manager_class = SandboxTerminalManager
            self.log.info("claude-pods: terminals now run in sandboxes (SandboxTerminalManager)")
        elif isinstance(current, type) and issubclass(current, SandboxTerminalManager):
            self.log.info("claude-pods: using configured terminal manager %s", current.__name__)
        else:
            self.log.warning(
                "claude-pods: terminals use %s, not a sandbox manager; terminals are local",
                getattr(current, "__name__", current),
            )

    def initialize_handlers(self) -> None:
        """Serve the course API, and the stock terminal URLs with owner checks when our
        manager is in use."""
        self.handlers.extend(course_handlers.default_handlers)
        manager_class = self._manager_class()
        if isinstance(manager_class, type) and issubclass(manager_class, SandboxTerminalManager):
            self.handlers.extend(terminal_handlers.default_handlers)

    def _sandbox_manager(self) -> SandboxTerminalManager | None:
        assert self.serverapp is not None
        manager = self.serverapp.web_app.settings.get("terminal_manager")
        return manager if isinstance(manager, SandboxTerminalManager) else None

    async def _start_jupyter_server_extension(self, serverapp: t.Any) -> None:
        """Open the course store; connect to the backend and sweep leftovers."""
        try:
            await self.ensure_courses_started()
        except Exception:
            # Terminals still work; the course API answers 503 and logs why.
            self.log.exception("claude-pods: could not start the course service")
        manager = self._sandbox_manager()
        if manager is not None:
            await manager.ensure_started()

    async def stop_extension(self) -> None:
        """Delete every sandbox (the terminals extension's own cleanup never runs), then
        close the course store (after the terminals, whose markers may still record)."""
        manager = self._sandbox_manager()
        if manager is not None:
            await manager.shutdown()
        if self.courses is not None and self._courses_started is not None:
            started, self._courses_started = self._courses_started, None
            try:
                await started
            except Exception:
                self.log.exception("claude-pods: the course service had failed to start")
            await self.courses.stop()
