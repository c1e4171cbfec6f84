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

import typing as t

from jupyter_server.extension.application import ExtensionApp
from jupyter_server_terminals.terminalmanager import TerminalManager
from traitlets import Bool

from .terminals import SandboxTerminalManager
from .terminals import handlers as terminal_handlers


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

    def _terminals_app(self) -> t.Any:
        assert self.serverapp is not None
        point = self.serverapp.extension_manager.extension_points.get("jupyter_server_terminals")
        return point.app if point is not None else None

    def _manager_class(self) -> type[t.Any] | None:
        terminals = self._terminals_app()
        return None if terminals is None else terminals.terminal_manager_class  # type: ignore[no-any-return]

    def initialize_settings(self) -> None:
        """Swap the terminal manager class unless the user chose one."""
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
        """Serve the stock terminal URLs with owner checks when our manager is in use."""
        manager_class = self._manager_class()
        if isinstance(manager_class, type) and issubclass(manager_class, SandboxTerminalManager):
            self.handlers.extend(terminal_handlers.default_handlers)

    def _sandbox_manager(self) -> SandboxTerminalManager | None:
        assert self.serverapp is not None
        manager = self.serverapp.web_app.settings.get("terminal_manager")
        return manager if isinstance(manager, SandboxTerminalManager) else None

    async def _start_jupyter_server_extension(self, serverapp: t.Any) -> None:
        """Connect to the backend and sweep leftovers as soon as the server runs."""
        manager = self._sandbox_manager()
        if manager is not None:
            await manager.ensure_started()

    async def stop_extension(self) -> None:
        """Delete every sandbox (the terminals extension's own cleanup never runs)."""
        manager = self._sandbox_manager()
        if manager is not None:
            await manager.shutdown()
